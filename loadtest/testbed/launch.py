"""Exec shim: join cgroups and/or pin CPUs, then become the command.

``python -m loadtest.testbed.launch [--join PROCS_FILE ...] [--cpus 0,1] -- CMD ARGS...``

Joining *before* exec means the command and every thread or child it ever makes start inside the
group: moving a running stress-ng afterwards would leave the workers it already forked outside,
and ``preexec_fn`` is unsafe in a process with threads (Python docs, subprocess).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.testbed.launch")
    p.add_argument("--join", action="append", default=[], help="a cgroup.procs file to join")
    p.add_argument("--cpus", help="comma-separated CPU numbers to pin to")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command after --")
    for procs in args.join:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    os.execvp(command[0], command)
    return 127  # execvp only returns by raising


if __name__ == "__main__":
    sys.exit(main())
