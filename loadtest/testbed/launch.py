"""Exec shim: die with the testbed, join cgroups and/or pin CPUs, then become the command.

``python -m loadtest.testbed.launch --parent PID [--join PROCS_FILE ...] [--cpus 0,1] -- CMD ARGS...``

Joining *before* exec means the command and every thread or child it ever makes start inside the
group: moving a running stress-ng afterwards would leave the workers it already forked outside,
and ``preexec_fn`` is unsafe in a process with threads (Python docs, subprocess).

``--parent`` sets ``PR_SET_PDEATHSIG`` (prctl(2)): the kernel sends SIGTERM when the testbed's
thread that started us exits, so a killed test run leaves no backend or agent behind; the setting
survives ``execve``. If the parent is already gone when it is set, the shim exits at once.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> bool:
    """Arrange SIGTERM on the parent's death; False when the parent is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the testbed's stop() is the only cleanup
        pass
    return os.getppid() == parent


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.testbed.launch")
    p.add_argument("--parent", type=int, help="exit with this process (PR_SET_PDEATHSIG)")
    p.add_argument("--join", action="append", default=[], help="a cgroup.procs file to join")
    p.add_argument("--cpus", help="comma-separated CPU numbers to pin to")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command after --")
    if args.parent is not None and not die_with_parent(args.parent):
        return 1
    for procs in args.join:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    os.execvp(command[0], command)
    return 127  # execvp only returns by raising


if __name__ == "__main__":
    sys.exit(main())
