"""``--workers N``: a supervising parent and N worker processes sharing one port (SO_REUSEPORT).

Each worker binds its own listening socket with ``SO_REUSEPORT`` and the kernel spreads new
connections across them by a hash of the 4-tuple, so there is no shared accept queue and no
thundering herd (NGINX ``reuseport``, Envoy's per-worker listeners). Before forking, the parent
binds (but never listens on) a socket with the same option: that resolves port 0 to one concrete
port for every worker, reports "address in use" once and clearly, and holds the port for the
parent's lifetime. A bound socket that does not listen receives no connections.

The parent only supervises (NGINX's master process): it forwards SIGHUP (reload) and
SIGTERM/SIGINT (drain) to the workers, restarts a worker that dies unexpectedly (giving up when
workers crash-loop at start-up), and exits 0 once all workers have drained. Metrics use
prometheus-client's multiprocess mode in a temporary directory that the parent creates before
forking and removes on exit, so ``/metrics`` on any worker reports all of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import FrameType

from .config import HostPort, ProxyConfig, load_config
from .metrics import MULTIPROC_ENV

log = logging.getLogger("presage.workers")

CRASH_WINDOW_S = 5.0  # a worker dying sooner than this after start counts as a crash loop
MAX_QUICK_CRASHES = 3
KILL_MARGIN_S = 10.0  # after drain delay + grace, stragglers are killed
PR_SET_PDEATHSIG = 1
FORWARDED = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


def reserve_port(address: HostPort) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError:
        sock.close()
        raise
    return sock


def with_ports(config: ProxyConfig, listen: HostPort, admin: HostPort) -> ProxyConfig:
    return dataclasses.replace(config, listen=listen, admin=admin)


@dataclasses.dataclass
class _Child:
    index: int
    process: multiprocessing.process.BaseProcess
    started: float


class Supervisor:
    def __init__(self, config: ProxyConfig, argv: Sequence[str]) -> None:
        self.config = config
        self.argv = list(argv)
        self.running = config
        self.children: dict[int, _Child] = {}
        self.stopping = False
        self.stop_deadline = 0.0
        self.quick_crashes = 0
        self._ctx = multiprocessing.get_context("fork")

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="presage-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
        held: list[socket.socket] = []
        try:
            listen_sock = reserve_port(self.config.listen)
            held.append(listen_sock)
            admin_sock = reserve_port(self.config.admin)
            held.append(admin_sock)
            listen = HostPort(self.config.listen.host, listen_sock.getsockname()[1])
            admin = HostPort(self.config.admin.host, admin_sock.getsockname()[1])
            self.running = with_ports(self.config, listen, admin)
            return self._supervise()
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        finally:
            for sock in held:
                sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _supervise(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.config.workers):
                self._spawn(index)
            log.info(
                "supervising %d workers on port %d (metrics in %s)",
                self.config.workers, self.running.listen.port, os.environ[MULTIPROC_ENV],
            )  # fmt: skip
            return self._wait_loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()

    def _spawn(self, index: int) -> None:
        process = self._ctx.Process(
            target=_worker_entry,
            args=(self.running, self.config, self.argv),
            name=f"presage-worker-{index}",
            daemon=False,
        )
        # Signals stay blocked across the fork until the child has replaced the parent's handlers:
        # a SIGTERM landing in between must not run the supervisor's handler in the child.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self.children[index] = _Child(index, process, time.monotonic())

    def _wait_loop(self) -> int:
        while self.children:
            sentinels = [c.process.sentinel for c in self.children.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            for child in [c for c in self.children.values() if not c.process.is_alive()]:
                if not self._reap(child):
                    return 1
            if self.stopping and time.monotonic() > self.stop_deadline:
                log.warning("workers still running after the grace period: killing them")
                self._kill_all()
        return 0

    def _reap(self, child: _Child) -> bool:
        """Handle one exited worker; False when workers are crash-looping."""
        child.process.join()
        del self.children[child.index]
        _mark_dead(child.process.pid)
        if self.stopping:
            return True
        code = child.process.exitcode
        quick = time.monotonic() - child.started < CRASH_WINDOW_S
        self.quick_crashes = self.quick_crashes + 1 if quick else 0
        if self.quick_crashes >= MAX_QUICK_CRASHES:
            log.error("workers keep exiting at start-up (last exit code %s): giving up", code)
            self._stop_all()
            return False
        log.error(
            "worker %d (pid %s) exited with code %s: restarting it", child.index, child.process.pid, code
        )
        self._spawn(child.index)
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading the workers' config")
            self._signal_all(signal.SIGHUP)
        elif not self.stopping:
            log.info("%s: draining the workers", signal.Signals(signum).name)
            self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        self.stop_deadline = (
            time.monotonic() + self.config.drain_delay_s + self.config.grace_s + KILL_MARGIN_S
        )
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for child in self.children.values():
            if child.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signum)

    def _kill_all(self) -> None:
        for child in self.children.values():
            if child.process.is_alive():
                child.process.kill()
                child.process.join(5)


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies, so workers are never orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _reloader(running: ProxyConfig, configured: ProxyConfig, argv: list[str]) -> Callable[[], ProxyConfig]:
    def reload() -> ProxyConfig:
        new = load_config(argv)
        listen = running.listen if new.listen == configured.listen else new.listen
        admin = running.admin if new.admin == configured.admin else new.admin
        if new.redis is None and running.redis is not None:  # the supervisor's embedded Redis
            new = dataclasses.replace(new, redis=running.redis)
        return with_ports(new, listen, admin)

    return reload


def _worker_entry(running: ProxyConfig, configured: ProxyConfig, argv: list[str]) -> None:
    """Runs in the forked worker process."""
    from . import metrics
    from .app import run_worker

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop takes over
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's ^C reaches the parent, which drains us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # before the loop runs there is nothing to drain
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    _die_with_parent()
    metrics.use_multiprocess_values()
    code = run_worker(running, _reloader(running, configured, argv), reuse_port=True)
    sys.stdout.flush()
    sys.exit(code)
