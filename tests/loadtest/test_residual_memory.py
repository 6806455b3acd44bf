"""``loadtest.residual_memory``: an online correction only pays when residuals have memory.

Samples are written in the recorder's own format (``predictor_runtime.samples``) from seeded
synthetic RTTs: independent residuals (the correction must not beat the cell's constant), and
residuals that persist from one request to the next (it must)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from loadtest import residual_memory as rm
from predictor_runtime.samples import LOCAL_FEATURES, Candidate, Sample, dumps, header_record, sample_record

BASE = {("a", 1.0): 0.004, ("a", 2.0): 0.009, ("b", 1.0): 0.006, ("b", 2.0): 0.015}


def write(path: Path, rows: list[tuple[float, str, float, float, int]]) -> Path:
    """``rows``: (dispatch time, backend, request class, RTT, status), one candidate per backend."""
    with path.open("wb") as fh:
        fh.write(dumps(header_record(["app_queue_length"], LOCAL_FEATURES)))
        for i, (ts, chosen, cls, rtt, status) in enumerate(rows):
            cands = tuple(Candidate(b, (0.0,), (0.0, 0.01, 0.2)) for b in ("a", "b"))
            sample = Sample(ts, f"r{i}", "GET", 0, cls, "peak_ewma", False, chosen, rtt, status, cands,
                            ("app_queue_length",), LOCAL_FEATURES)  # fmt: skip
            fh.write(dumps(sample_record(sample)))
    return path


def synthetic(phi: float, n: int = 1200, seed: int = 7) -> list[tuple[float, str, float, float, int]]:
    """Requests every 10 ms alternating between backends, RTT = the cell's base x exp(residual),
    the residual an AR(1) per backend with coefficient ``phi`` (0: independent) and sd 0.3."""
    rng = np.random.default_rng(seed)
    level = {"a": 0.0, "b": 0.0}
    rows = []
    sd = 0.3 * math.sqrt(1 - phi * phi)  # the same spread whatever the memory
    for i in range(n):
        backend = "ab"[i % 2]
        cls = float(rng.choice([1.0, 2.0]))
        level[backend] = phi * level[backend] + rng.normal(0.0, sd)
        rows.append((1000.0 + 0.01 * i, backend, cls, BASE[(backend, cls)] * math.exp(level[backend]), 200))
    return rows


def test_independent_residuals_gain_nothing_from_a_correction(tmp_path: Path) -> None:
    r = rm.analyse(rm.load(write(tmp_path / "iid.jsonl", synthetic(0.0)), 3), [0.1, 0.3])
    assert r["scored"] == r["requests"] == 1200
    assert all(abs(v) < 0.1 for v in r["lag1"].values())
    for scope in ("backend", "host"):
        for value in r["corrected"][scope].values():
            assert value <= r["noise_check"] + 0.005


def test_persistent_residuals_are_learnt_per_backend(tmp_path: Path) -> None:
    r = rm.analyse(rm.load(write(tmp_path / "ar.jsonl", synthetic(0.95)), 3), [0.3])
    assert all(v > 0.8 for v in r["lag1"].values())
    assert r["corrected"]["backend"]["0.3"] > r["noise_check"] + 0.08
    # over all backends the two independent processes blur each other: less gain
    assert r["corrected"]["host"]["0.3"] < r["corrected"]["backend"]["0.3"]


def test_a_residual_is_used_only_once_its_request_completed() -> None:
    # three requests to one backend: the second is dispatched while the first is still out, the
    # third after it came back (twice as slow as its constant)
    req = rm.Requests(
        ts=np.array([0.0, 0.005, 0.030]),
        rtt=np.array([0.020, 0.010, 0.010]),
        backend=["a", "a", "a"],
        cell=[("a", 1.0, 0), ("a", 1.0, 0), ("a", 1.0, 0)],
    )
    const = np.array([0.010, 0.010, 0.010])
    out = rm.corrected(req, const, 1.0, per_backend=True)
    assert out[0] == pytest.approx(0.010) and out[1] == pytest.approx(0.010)  # nothing known yet
    assert out[2] == pytest.approx(0.020)  # alpha 1: the last residual, log 2


def test_small_cells_and_failures_are_left_out(tmp_path: Path) -> None:
    rows = synthetic(0.0, n=40)
    rows += [(2000.0, "a", 7.0, 0.5, 200), (2000.1, "a", 1.0, 9.0, 503)]  # a cell of one; a 5xx
    req = rm.load(write(tmp_path / "s.jsonl", rows), 3)
    assert len(req.rtt) == 41  # the 503 is not a request that answered
    const = rm.cell_constants(req.cell, req.rtt, rm.MIN_ROWS)
    assert math.isnan(const[-1]) and np.isfinite(const[:-1]).all()


def test_main_prints_and_writes_and_names_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "s.jsonl", synthetic(0.0, n=200))
    out = tmp_path / "r.json"
    assert rm.main([str(path), "--alphas", "0.2", "--out", str(out)]) == 0
    assert "noise check (best constant per cell)" in capsys.readouterr().out
    assert set(json.loads(out.read_text())[str(path)]["corrected"]["backend"]) == {"0.2"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert rm.main([str(bad), "--out", str(out)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        rm.main([str(path), "--alphas", "0,1.5"])
    assert exc.value.code == 2
    assert "alphas must be in (0, 1]" in capsys.readouterr().err
