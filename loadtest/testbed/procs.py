"""Child processes of the testbed: each in its own session (so its process group can be signalled
whole, stress-ng workers included), output to a log file, stopped TERM-then-KILL with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

STOP_GRACE_S = 3.0


class Child:
    """One started process group. ``name`` is for logs and error messages."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                env=env, start_new_session=True,
            )
        self.pid = self.proc.pid
        self.started_at = time.time()
        self.stopped_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace_s``; returns the exit status of the leader."""
        if self.stopped_at is None:
            self.stopped_at = time.time()
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.proc.wait, grace_s)
        self._signal_group(signal.SIGKILL)  # also any worker the leader left behind
        return await asyncio.to_thread(self.proc.wait, 5.0)


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter (the venv), independent of PATH."""
    return [sys.executable, "-m", module, *args]


def launch_prefix(join: Sequence[Path] = (), cpus: Sequence[int] = ()) -> list[str]:
    """The ``launch`` shim: the child dies with this process, joins cgroups, pins CPUs, then execs."""
    argv = python_module("loadtest.testbed.launch", "--parent", str(os.getpid()))
    for procs in join:
        argv += ["--join", str(procs)]
    if cpus:
        argv += ["--cpus", ",".join(str(c) for c in cpus)]
    return [*argv, "--"]
