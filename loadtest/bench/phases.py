"""The three phases of ``presage bench`` against real processes: collect, train, evaluate.

1. **collect**: the testbed up (backends, agents, Redis), a ``presage proxy`` routing by
   peak-EWMA with half of the requests explored uniformly at random (``--explore 0.5``, flagged
   in the samples) and recording every request (``--record``), the scenario's trace with the
   *collection* seed, the interference schedule started with the load;
2. **train**: ``presage train --data samples.jsonl --out model/``, a child process;
3. **evaluate**: every contender in turn on the *evaluation* seed's arrival sequence (the same
   arrays for all), with the interference schedule restarted at its load's start, and a pause
   between runs so the backends drain and the agents' short windows forget the previous run.

Each run: target up, ``t0`` a little ahead, schedule started at ``t0`` and the hidden state
rewritten (the oracle re-reads it), load from ``t0``, the proxy's ``/metrics`` scraped, target down.
The whole bench runs inside one event loop; the load generator shares it, the backends, agents,
Redis and balancers are separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.loadgen import LoadResult, run_open_loop
from loadtest.testbed.scenario import Scenario

from . import aggregate, calibrate, drain, external, machine, prom
from .contenders import Contender
from .oracle import STATE_ENV
from .proxy_process import ProxyProcess, ProxyStartError, free_port
from .workload import Workload

CLASS_HEADER = "X-Presage-Class"
TICK_S = 5.0
# Inputs the testbed's models never use: host_* because every backend shares this one host (they
# say nothing about which backend is faster, only how busy the machine was during collection),
# proc_* because a process's RSS, threads and open files describe its history, not its load, and
# drift out of the training range as the run goes on (the OOD guard then refuses every decision).
TESTBED_EXCLUDE = "host_*,proc_*"
# Collection: peak-EWMA routing with half of the requests explored uniformly. All-random routing
# overloads the weak backends into queues of seconds, a regime no sensible policy ever sees, and
# the model would learn that world instead of the one it will route in; the explored half keeps
# every backend observed in every state (the samples carry the flag).
COLLECT_POLICY = "peak_ewma"
# Tree ensembles only: their predictions stay within the RTTs seen in training, however far an
# input drifts; a linear model or an MLP extrapolates (ridge reached 34% validation accuracy and an
# R2 of -73 on the later test split of a quick run). The safeguard idea of vPALs, applied at training.
TESTBED_FAMILIES = "lgbm,rf"
COLLECT_EXPLORE = "0.5"


@dataclass
class Settings:
    out: Path
    contenders: list[Contender]
    collect_seed: int
    eval_seed: int
    lead_s: float = 1.0  # target up -> load start: the oracle re-reads the schedule (0.25 s), agents report
    settle_s: float = 2.0  # between runs: backends drain, agents' 5-s windows move on
    drain_timeout_s: float = 30.0  # longest wait for the backends' queues to empty after a run
    request_timeout_s: float = 10.0
    train_timeout_s: float = 240.0
    train_args: tuple[str, ...] = ()
    model_dir: Path | None = None  # a bundle to evaluate instead of collecting and training
    rounds: int = 1  # every contender this many times, order rotated (aggregate.combine_rounds)
    collect_duration_s: float | None = None  # default: the scenario's duration
    calibrate_s: float = 3.0  # warm-up and per-request overhead measurement (0: none)


@dataclass
class Run:
    """One contender's outcome: the JSON entry and, when measured, the per-request result."""

    entry: dict[str, Any]
    result: LoadResult | None = None


@dataclass
class Phases:
    scenario: Scenario
    settings: Settings
    testbed: Any  # loadtest.testbed.stack.Testbed, started
    progress: Callable[[str], None]
    timing: dict[str, float] = field(default_factory=dict)
    last_episodes: list[dict[str, Any]] = field(default_factory=list)  # of the latest run
    last_machine: dict[str, float] = field(default_factory=dict)  # CPU taken by others in the latest run
    calibration: dict[str, Any] = field(default_factory=dict)  # per backend, from calibrate.calibrate

    # -- warm-up and calibration ---------------------------------------------------------------
    async def warm_up(self, workload: Workload) -> dict[str, Any]:
        """Every backend loaded directly for a few seconds; measures each one's per-request overhead."""
        seconds = min(self.settings.calibrate_s, workload.duration_s)
        if seconds <= 0:
            return {}
        started = time.monotonic()
        self.calibration = await calibrate.calibrate(self.testbed, workload, seconds)
        self.timing["calibrate_s"] = time.monotonic() - started
        parts = [
            f"{bid} {1e3 * c['overhead_s']:.2f} ms" if c.get("overhead_s") is not None else f"{bid} -"
            for bid, c in self.calibration.items()
        ]
        self.progress(
            f"warm-up: {seconds:g}s direct to each backend; CPU per request beyond the work itself: "
            + ", ".join(parts)
        )
        return self.calibration

    @property
    def hidden_state_path(self) -> Path:
        return self.settings.out / "hidden_state.json"

    # -- collect -------------------------------------------------------------------------------
    async def collect(self, workloads: Sequence[Workload]) -> tuple[Path, dict[str, Any]]:
        """Exploration traffic through one recording proxy, one pass per workload (the interference
        schedule restarted for each: every pass sees every episode); returns the samples file and
        the passes' combined load figures."""
        samples = self.settings.out / "samples.jsonl"
        samples.unlink(missing_ok=True)
        started = time.monotonic()
        total = sum(w.count for w in workloads)
        self.progress(
            f"collect: {total} requests in {len(workloads)} passes of {workloads[0].duration_s:.0f}s, "
            f"seeds {', '.join(str(w.seed) for w in workloads)}"
        )
        extra = ["--explore", COLLECT_EXPLORE, "--record", str(samples)]
        extra += ["--class-from", f"header:{CLASS_HEADER}"]
        proxy = ProxyProcess(
            self.testbed.backends, COLLECT_POLICY, log_path=self._log("proxy-collect"),
            redis_url=self.testbed.redis_url, extra=extra,
        )  # fmt: skip
        summaries = []
        async with proxy:
            for i, workload in enumerate(workloads, 1):
                result = await self.drive(proxy.url, workload, f"collect {i}/{len(workloads)}")
                summaries.append(result.summary(self.scenario.slo_p95_s))
            # stopping the proxy flushes the recorder's pending samples
        await self._drain("collect")
        figures = aggregate.figures(summaries[0])
        for key in ("count", "ok", "errors", "dropped"):
            figures[key] = sum(int(s.get(key) or 0) for s in summaries)
        figures["passes"] = len(summaries)
        lines = _count_lines(samples)
        self.timing["collect_s"] = time.monotonic() - started
        self.progress(
            f"collect: {figures['ok']}/{figures['count']} answered, {figures['errors']} errors; "
            f"{lines} samples in {samples.name}"
        )
        return samples, figures

    # -- train ---------------------------------------------------------------------------------
    async def train(self, samples: Path) -> tuple[Path | None, dict[str, Any]]:
        """``presage train``; returns the bundle (``None`` when training failed) and what it reported."""
        model = self.settings.out / "model"
        log = self._log("train")
        # Every testbed backend shares this one host: host-wide inputs (load, memory, network) are equal
        # for all candidates of a decision, so they cannot rank them, and they drift with whatever else
        # runs on the machine, which sent every decision of the first runs to the OOD fallback.
        command = [
            sys.executable, "-m", "proxy.cli", "train", "--data", str(samples), "--out", str(model),
            "--no-progress", "--exclude", TESTBED_EXCLUDE, "--families", TESTBED_FAMILIES,
            *self.settings.train_args,
        ]  # fmt: skip
        self.progress("train: " + " ".join(command[3:]))
        started = time.monotonic()
        rc = await _run_logged(command, log, self.settings.train_timeout_s)
        self.timing["train_s"] = time.monotonic() - started
        if rc != 0:
            reason = f"presage train exited with {rc} (see {log.name}): {_tail(log, 300)}"
            self.progress("train: FAILED: " + reason)
            return None, {"error": reason}
        info = model_info(model)
        self.progress(
            f"train: {info.get('family')} model, held-out accuracy {info.get('accuracy', float('nan')):.3f}, "
            f"inference p99 {1e6 * (info.get('inference_p99_s') or 0):.0f} us, "
            f"{self.timing['train_s']:.0f}s"
        )
        return model, info

    # -- evaluate ------------------------------------------------------------------------------
    async def evaluate(self, contender: Contender, workload: Workload, model: Path | None) -> Run:
        entry: dict[str, Any] = {
            "name": contender.name, "label": contender.display, "family": contender.family,
            "predictive": contender.predictive, "status": "skipped", "reason": None,
            "figures": None, "proxy": None,
        }  # fmt: skip
        reason = self._unavailable(contender, model)
        if reason is not None:
            entry["reason"] = reason
            self.progress(f"{contender.name}: skipped ({reason})")
            return Run(entry)
        started = time.monotonic()
        try:
            async with self._target(contender, model) as (url, proxy):
                result = await self.drive(url, workload, contender.name)
                if proxy is not None:
                    text = await proxy.scrape()
                    entry["proxy"] = prom.proxy_figures(text) if text is not None else None
                    if contender.predictive and entry["proxy"] is not None:
                        entry["proxy"].update(await proxy.model_figures())
        except (ProxyStartError, TargetError) as exc:
            entry.update(status="failed", reason=str(exc)[:600])
            self.progress(f"{contender.name}: FAILED to start: {str(exc)[:300]}")
            return Run(entry)
        finally:
            entry["drain"] = await self._drain(contender.name)
            await asyncio.sleep(self.settings.settle_s)
        summary = result.summary(self.scenario.slo_p95_s)
        entry.update(
            status="measured", figures=aggregate.figures(summary), episodes=self.last_episodes,
            machine=self.last_machine,
        )  # fmt: skip
        self.timing[f"run_{contender.name}_s"] = time.monotonic() - started
        self.progress(
            f"{contender.name}: {_one_line(entry['figures'])}; other processes used "
            f"{self.last_machine['foreign_cores']:.2f} cores"
        )
        return Run(entry, result)

    async def _drain(self, label: str) -> dict[str, Any]:
        """Wait until no backend has work left from this run, so the next starts from empty queues."""
        state = await drain.wait_idle(self.testbed.backends, timeout_s=self.settings.drain_timeout_s)
        if state["busy_at_start"]:
            left = ", ".join(f"{b} {n:g}" for b, n in state["busy_at_start"].items())
            verdict = "idle" if state["idle"] else "still busy"
            waited = state["waited_s"]
            self.progress(f"{label}: backends had work left ({left}); {verdict} after {waited:.1f}s")
        return state

    def _unavailable(self, contender: Contender, model: Path | None) -> str | None:
        if contender.family == "external":
            return external.available(contender.server)
        if contender.predictive and model is None:
            return "no model bundle (training failed or was skipped)"
        return None

    @contextlib.asynccontextmanager
    async def _target(
        self, contender: Contender, model: Path | None
    ) -> AsyncIterator[tuple[str, ProxyProcess | None]]:
        if contender.family == "external":
            urls = [url for _, url in self.testbed.backends]
            lb = await asyncio.to_thread(
                external.start, contender.server, contender.policy, urls, free_port()
            )
            if lb is None:
                raise TargetError(f"{contender.server} did not start (its log is gone with its temp dir)")
            try:
                yield lb.url, None
            finally:
                await asyncio.to_thread(lb.stop)
            return
        extra = ["--class-from", f"header:{CLASS_HEADER}", *contender.args]
        env = {}
        if contender.predictive and model is not None:
            extra += ["--model", str(model)]
        if contender.family == "reference":
            self._write_hidden_state()  # the oracle reads it at start-up, then re-reads it when rewritten
            env[STATE_ENV] = str(self.hidden_state_path)
        proxy = ProxyProcess(
            self.testbed.backends, contender.policy, log_path=self._log(f"proxy-{contender.name}"),
            redis_url=self.testbed.redis_url, extra=extra, env=env,
        )  # fmt: skip
        async with proxy:
            yield proxy.url, proxy

    # -- one load run ------------------------------------------------------------------------
    async def drive(self, url: str, workload: Workload, label: str) -> LoadResult:
        """Start the interference schedule at ``t0`` and the load at ``t0``; return every outcome."""
        t0 = time.time() + self.settings.lead_s
        await restart_interference(self.testbed, t0)
        self._write_hidden_state()
        await asyncio.sleep(max(0.0, t0 - time.time()))
        ticker = asyncio.create_task(self._tick(label, workload.duration_s))
        before = await asyncio.to_thread(machine.snapshot)
        try:
            return await run_open_loop(
                url, workload.arrivals, sizes=workload.sizes, class_header=CLASS_HEADER,
                timeout_s=self.settings.request_timeout_s, duration_s=workload.duration_s,
            )  # fmt: skip
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self.last_episodes = episode_report(self.testbed)
            after = await asyncio.to_thread(machine.snapshot)
            self.last_machine = {
                "foreign_cores": round(machine.foreign_cores(before, after), 3),
                "load1": round(machine.load_average(), 2),
            }
            await stop_interference(self.testbed)

    async def _tick(self, label: str, duration_s: float) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            elapsed = time.monotonic() - started
            if elapsed < duration_s:
                self.progress(f"{label}: {elapsed:.0f}/{duration_s:.0f}s of load")
            else:
                self.progress(
                    f"{label}: load sent; waiting for the last answers "
                    f"(each bounded by {self.settings.request_timeout_s:g}s)"
                )
                return

    def _write_hidden_state(self) -> None:
        """The testbed's hidden state plus the measured per-request overhead, written atomically."""
        t0 = getattr(self.testbed, "t0_wall", None) or time.time()
        state = self.testbed.hidden_state(t0)
        state["request_overhead_s"] = {
            bid: c["overhead_s"] for bid, c in self.calibration.items() if c.get("overhead_s") is not None
        }
        path = self.hidden_state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)  # the oracle re-reads it on change and must never see half a file

    def _log(self, name: str) -> Path:
        path = self.settings.out / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class TargetError(RuntimeError):
    """An external balancer that did not come up."""


def episode_report(testbed: Any) -> list[dict[str, Any]]:
    """What became of each scheduled episode in the run (ran, or skipped and why)."""
    return [
        {
            "backend": r.episode.backend,
            "kind": r.episode.kind,
            "workers": r.episode.workers,
            "status": r.status,
        }
        for r in testbed.episode_runs()
    ]


def model_info(model: Path) -> dict[str, Any]:
    """What the bench reports of a bundle: family, held-out accuracy, inference time, samples."""
    try:
        meta = json.loads((model / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"error": f"cannot read {model / 'model.json'}: {exc}"}
    metrics = meta.get("metrics", {})
    training = meta.get("training", {})
    return {
        "family": meta.get("family"),
        "accuracy": metrics.get("accuracy"),
        "mae_s": metrics.get("mae_s"),
        "r2": metrics.get("r2"),
        "inference_p50_s": meta.get("inference", {}).get("p50_s"),
        "inference_p99_s": meta.get("inference", {}).get("p99_s"),
        "features": len(meta.get("feature_names", [])),
        "samples_used": training.get("samples_used"),
        "fits_budget": training.get("fits_budget"),
    }


async def _run_logged(command: list[str], log: Path, timeout_s: float) -> int:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
        )
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        with log.open("a") as out:
            out.write(f"\nkilled after {timeout_s:.0f}s\n")
        return -9


async def stop_interference(testbed: Any) -> None:
    """End the running schedule's episodes (stress-ng processes) so the next run starts quiet."""
    await _maybe_await(testbed.stop_interference())


async def restart_interference(testbed: Any, t0_wall: float) -> None:
    """The scenario's episodes again, from ``t0_wall``: every policy meets the same neighbours."""
    await stop_interference(testbed)
    await _maybe_await(testbed.start_interference(t0_wall))


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip().replace("\n", " | ")
    except OSError:
        return ""


def _one_line(f: dict[str, Any]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.1f}"

    breach = f["slo_breach_share"]
    return (
        f"{f['achieved_rps']:.1f} req/s, errors {f['errors']}, dropped {f['dropped']}, mean/p50/p95/p99 "
        f"{ms(f['mean_s'])}/{ms(f['p50_s'])}/{ms(f['p95_s'])}/{ms(f['p99_s'])} ms, "
        f"SLO-breach windows {'-' if breach is None else f'{breach:.0%}'}"
    )
