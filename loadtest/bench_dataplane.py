"""Data-plane benchmark: Presage against direct access, HAProxy and NGINX, in one run.

``python -m loadtest.bench_dataplane [--out out/bench_dataplane.json]``

Setup (all on loopback, every part in its own process): N tiny aiohttp backends answering
``ok`` (``loadtest.dataplane_load backend``), then, one after another, each target in front of
them: the backends directly, Presage ``--workers 2`` with each heuristic policy, HAProxy
``leastconn`` and NGINX ``least_conn`` (when installed; configs written by ``external_lb``).

Per target, from a separate load-generator process (``loadtest.dataplane_load``):

1. **max req/s**: closed loop, C keep-alive connections, each sending its next request as soon
   as the previous answer is in;
2. **latency at half load**: open loop at half of that target's own maximum, latency counted
   from each request's due time (no coordinated omission);
3. **added latency**: the same open-loop rate sent straight to the backends, right after, so that
   ``target - direct`` compares like with like on a machine whose load drifts (the ``direct`` row's
   own "added" figures compare two identical runs: they are the noise floor).

Every target is measured once per round (``--rounds``, order rotated), and the table shows the
median over rounds.

The proxies run with access logs off and health checks at their defaults. The load generator,
the backends and the target share the machine's cores, which is the point on a 2-core box: a
proxy's cost shows up as throughput it takes away. Numbers from a shared machine are noisy;
compare the ratios of one run, not absolute figures across runs.

Prints a markdown table and writes JSON (every phase's raw numbers plus the machine state).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .external_lb import ExternalLB, start_haproxy, start_nginx

log = logging.getLogger("presage.bench_dataplane")

POLICIES = ("round_robin", "random", "least_request", "peak_ewma")
START_TIMEOUT_S = 20.0
TARGET_RATIO = 0.40  # Presage --workers 2 vs HAProxy requests/s
TARGET_ADDED_P50_MS = 0.3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Settings:
    backends: int = 2
    duration_s: float = 2.0
    connections: int = 32
    workers: int = 2
    rounds: int = 3
    budget_s: float = 220.0  # no round is started that would end past this
    policies: tuple[str, ...] = POLICIES
    external: bool = True


@dataclass
class Trial:
    """One round of one target: its maximum, and latency at half of it, with the direct baseline."""

    max: dict[str, Any]
    half: dict[str, Any]
    direct_at_half: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"max": self.max, "half": self.half, "direct_at_half": self.direct_at_half}


@dataclass
class Row:
    """A target over all rounds; the table shows medians (noise on a shared box is one-sided)."""

    target: str
    trials: list[Trial] = field(default_factory=list)

    def median(self, fn: Callable[[Trial], float]) -> float:
        return float(statistics.median(fn(t) for t in self.trials))

    @property
    def max_rps(self) -> float:
        return self.median(lambda t: t.max["rps"])

    @property
    def p50_ms(self) -> float:
        return self.median(lambda t: t.half["p50_ms"])

    @property
    def p99_ms(self) -> float:
        return self.median(lambda t: t.half["p99_ms"])

    @property
    def half_rps(self) -> float:
        return self.median(lambda t: t.half["rps"])

    @property
    def added_p50_ms(self) -> float:
        return self.median(lambda t: t.half["p50_ms"] - t.direct_at_half["p50_ms"])

    @property
    def added_p99_ms(self) -> float:
        return self.median(lambda t: t.half["p99_ms"] - t.direct_at_half["p99_ms"])

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "max_rps": self.max_rps,
            "p50_ms_at_half": self.p50_ms,
            "p99_ms_at_half": self.p99_ms,
            "added_p50_ms": self.added_p50_ms,
            "added_p99_ms": self.added_p99_ms,
            "rounds": [t.as_json() for t in self.trials],
        }


def load(targets: Sequence[str], settings: Settings, *, rate: float | None = None) -> dict[str, Any]:
    """One load phase in its own process; returns its JSON result."""
    command = [
        sys.executable, "-m", "loadtest.dataplane_load", "load",
        "--target", ",".join(targets),
        "--connections", str(settings.connections),
        "--duration", str(settings.duration_s),
        "--mode", "closed" if rate is None else "open",
    ]  # fmt: skip
    if rate is not None:
        command += ["--rate", f"{rate:.1f}"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=settings.duration_s + 60, check=True
    )
    return dict(json.loads(done.stdout))


@contextlib.contextmanager
def backend_processes(n: int) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        addresses = []
        for _ in range(n):
            proc = subprocess.Popen(
                [sys.executable, "-m", "loadtest.dataplane_load", "backend", "--port", "0"],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "listening":
                raise RuntimeError(f"backend did not start: {line}")
            addresses.append(line[1])
        yield addresses
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


@contextlib.contextmanager
def presage(urls: Sequence[str], policy: str, workers: int) -> Iterator[str | None]:
    with presage_process(urls, policy, workers) as (address, _admin):
        yield address


@contextlib.contextmanager
def presage_process(
    urls: Sequence[str],
    policy: str,
    workers: int = 1,
    extra: Sequence[str] = (),
    ids: Sequence[str] | None = None,
) -> Iterator[tuple[str, str]]:
    """A ``presage proxy`` process (backends ``ids``, default ``b1..bN``, access log off, no drain
    delay) with ``extra`` flags; yields (data-plane address, admin address) once all workers listen."""
    port, admin = free_port(), free_port()
    command = [
        sys.executable, "-m", "proxy.main",
        "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
        "--policy", policy, "--workers", str(workers),
        "--access-log", "off", "--drain-delay-s", "0", "--grace-s", "2", *extra,
    ]  # fmt: skip
    names = list(ids) if ids is not None else [f"b{i}" for i in range(1, len(urls) + 1)]
    if len(names) != len(urls):
        raise ValueError(f"{len(urls)} backends but {len(names)} ids")
    for name, url in zip(names, urls, strict=True):
        command += ["--backend", f"{name}={url}"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{admin}/readyz", proc)
        _wait_workers(proc.pid, workers)
        yield f"127.0.0.1:{port}", f"127.0.0.1:{admin}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"presage exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("presage did not become ready")


def _wait_workers(pid: int, n: int) -> None:
    """With --workers N, wait until all N listen (a fresh connection could land on any)."""
    if n <= 1:
        return
    import psutil

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        if len(children) == n and all(_listening(c) for c in children):
            return
        time.sleep(0.1)


def _listening(process: Any) -> bool:
    with contextlib.suppress(Exception):
        return any(c.status == "LISTEN" for c in process.net_connections(kind="tcp"))
    return False


def measure(name: str, address: str, backends: Sequence[str], settings: Settings) -> Trial:
    peak = load([address], settings)
    rate = max(peak["rps"] / 2.0, 1.0)
    trial = Trial(peak, load([address], settings, rate=rate), load(backends, settings, rate=rate))
    log.info(
        "%-28s max %8.0f req/s  p50 %.3f ms  added p50 %+.3f ms at %.0f req/s",
        name, peak["rps"], trial.half["p50_ms"], trial.half["p50_ms"] - trial.direct_at_half["p50_ms"], rate,
    )  # fmt: skip
    return trial


Target = tuple[str, Callable[[list[str]], contextlib.AbstractContextManager[str | None]]]


def targets(settings: Settings) -> list[Target]:
    """(name, urls -> context manager yielding the address to load, or None when unavailable)."""
    out: list[Target] = [("direct", _direct)]
    for policy in settings.policies:
        out.append((f"presage-{policy} (w{settings.workers})", _presage_target(policy, settings.workers)))
    if settings.external:
        out.append(("haproxy-leastconn", lambda urls: _external(start_haproxy(urls, free_port()))))
        out.append(("nginx-least_conn", lambda urls: _external(start_nginx(urls, free_port()))))
    return out


@contextlib.contextmanager
def _direct(urls: list[str]) -> Iterator[str | None]:
    yield ",".join(u.removeprefix("http://") for u in urls)


def _presage_target(
    policy: str, workers: int
) -> Callable[[list[str]], contextlib.AbstractContextManager[str | None]]:
    return lambda urls: presage(urls, policy, workers)


@contextlib.contextmanager
def _external(lb: ExternalLB | None) -> Iterator[str | None]:
    if lb is None:
        yield None
        return
    with lb:
        yield f"127.0.0.1:{lb.port}"


def run(settings: Settings) -> list[Row]:
    """Every target once per round; the order rotates so that no target always runs last."""
    plan = targets(settings)
    rows = {name: Row(name) for name, _ in plan}
    started = time.monotonic()
    with backend_processes(settings.backends) as addresses:
        urls = [f"http://{a}" for a in addresses]
        for round_ in range(settings.rounds):
            elapsed = time.monotonic() - started
            if round_ and elapsed / round_ * (round_ + 1) > settings.budget_s:
                log.warning("stopping after %d rounds to stay within %.0f s", round_, settings.budget_s)
                break
            shift = round_ % len(plan)
            for name, make in plan[shift:] + plan[:shift]:
                with make(urls) as address:
                    if address is not None:
                        rows[name].trials.append(measure(name, address, addresses, settings))
    return [row for row in rows.values() if row.trials]


def table(rows: Sequence[Row]) -> str:
    haproxy = next((r for r in rows if r.target.startswith("haproxy")), None)
    lines = [
        "| target | max req/s | vs HAProxy | p50 ms at half load | p99 ms at half load "
        "| added p50 ms | added p99 ms | half load req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r.max_rps / haproxy.max_rps:.0%}" if haproxy else "n/a"
        added = (f"{r.added_p50_ms:+.3f}", f"{r.added_p99_ms:+.3f}")
        lines.append(
            f"| {r.target} | {r.max_rps:.0f} | {ratio} | {r.p50_ms:.3f} | {r.p99_ms:.3f} "
            f"| {added[0]} | {added[1]} | {r.half_rps:.0f} |"
        )
    return "\n".join(lines)


def verdict(rows: Sequence[Row]) -> dict[str, Any]:
    haproxy = next((r for r in rows if r.target.startswith("haproxy")), None)
    out: dict[str, Any] = {"ratio_target": TARGET_RATIO, "added_p50_target_ms": TARGET_ADDED_P50_MS}
    for r in rows:
        if not r.target.startswith("presage"):
            continue
        ratio = r.max_rps / haproxy.max_rps if haproxy else None
        out[r.target] = {
            "ratio_vs_haproxy": ratio,
            "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
            "added_p50_ms": r.added_p50_ms,
            "added_p50_met": r.added_p50_ms <= TARGET_ADDED_P50_MS,
        }
    return out


def machine() -> dict[str, Any]:
    import aiohttp

    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_dataplane", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="out/bench_dataplane.json", help="JSON result path")
    parser.add_argument("--backends", type=int, default=2, help="backend processes (default 2)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per load phase (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds over all targets; medians shown (default 3)"
    )
    parser.add_argument("--connections", type=int, default=32, help="load-generator connections (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="Presage workers (default 2)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated Presage policies")
    parser.add_argument("--no-external", action="store_true", help="skip HAProxy and NGINX")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    settings = Settings(
        backends=args.backends,
        duration_s=args.duration,
        connections=args.connections,
        workers=args.workers,
        rounds=args.rounds,
        policies=tuple(p for p in args.policies.split(",") if p),
        external=not args.no_external,
    )
    before = machine()
    started = time.monotonic()
    rows = run(settings)
    result = {
        "command": " ".join(["python -m loadtest.bench_dataplane", *(argv or sys.argv[1:])]),
        "settings": settings.__dict__ | {"policies": list(settings.policies)},
        "machine_before": before,
        "machine_after": machine(),
        "elapsed_s": time.monotonic() - started,
        "results": [r.as_json() for r in rows],
        "targets": verdict(rows),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"\n{len(rows)} targets in {result['elapsed_s']:.0f} s; JSON in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
