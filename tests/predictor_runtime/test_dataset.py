import io
from pathlib import Path

import numpy as np
import pytest

from metrics_agent.schema import feature_names
from predictor_runtime import samples
from predictor_runtime.train.dataset import (
    Dataset,
    TrainInputError,
    build_dataset,
    expand_sources,
    read_samples,
    time_split,
)

NAMES = ("host_cpu_util", "app_queue_length")


def make(
    ts: float, chosen: str = "b1", status: int = 200, rtt: float = 0.01, x: object = (0.5, 1.0)
) -> samples.Sample:
    cands = tuple(
        samples.Candidate(b, None if x is None else tuple(x), (1.0, 0.01, 0.2))  # type: ignore[arg-type]
        for b in ("b1", "b2")
    )
    return samples.Sample(
        ts=ts, id=f"r{ts}", method="GET", req_bytes=0, req_class=256.0, policy="peak_ewma", explore=False,
        chosen=chosen, rtt_s=rtt, status=status, candidates=cands, feature_names=NAMES,
        local_names=samples.LOCAL_FEATURES,
    )  # fmt: skip


def alternating(n: int) -> list[samples.Sample]:
    return [make(float(i), chosen="b1" if i % 2 else "b2", rtt=0.01 + i * 1e-5) for i in range(n)]


def test_rows_are_the_chosen_candidate_with_named_columns() -> None:
    ds = build_dataset(alternating(10), min_samples=5)
    assert ds.names == (
        *NAMES,
        *samples.LOCAL_FEATURES,
        *samples.REQUEST_FEATURES,
        "backend=b1",
        "backend=b2",
    )
    assert ds.x.shape == (10, len(ds.names)) and ds.x.dtype == np.float32
    assert ds.backends == ("b1", "b2")
    onehot = ds.columns(["backend=b1", "backend=b2", "backend=b9"])
    np.testing.assert_array_equal(onehot[:, 0], ds.backend == "b1")
    assert not onehot[:, 2].any()  # a backend never seen is all zeros
    np.testing.assert_array_equal(ds.columns(["req_class"])[:, 0], 256.0)


def test_failures_are_not_targets_and_are_counted() -> None:
    data = [*alternating(10), make(20, status=0, rtt=1.0), make(21, status=503, rtt=0.001),
            make(22, status=404), make(23, x=None)]  # fmt: skip
    ds = build_dataset(data, min_samples=5)
    assert len(ds) == 11  # the 404 was served: it stays
    assert ds.dropped == {
        "status 0 (no response)": 1,
        "status >= 500": 1,
        "no feature vector for the chosen backend": 1,
    }
    assert ds.n_read == 14


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "too few samples: the data holds none"),
        (alternating(3), "too few samples: 3 usable of 3 read"),
        ([make(float(i)) for i in range(10)], r"a single backend \(b1\)"),
        ([*alternating(9), make(9.5, rtt=float("nan"))], "NaN/inf rtt_s in 1 samples"),
        ([*alternating(9), make(9.5, x=(0.5, float("inf")))], "NaN/inf feature values .*'app_queue_length'"),
        ([*alternating(9), make(9.5, x=(0.5,))], "missing columns: sample 'r9.5'"),
    ],
)
def test_bad_input_names_the_problem(data: list[samples.Sample], message: str) -> None:
    with pytest.raises(TrainInputError, match=message):
        build_dataset(data, min_samples=5)


def test_a_later_header_in_another_order_is_remapped(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with open(path, "wb") as fh:
        fh.write(samples.dumps(samples.header_record(NAMES)))
        for s in alternating(6):
            fh.write(samples.dumps(samples.sample_record(s)))
        fh.write(samples.dumps(samples.header_record(NAMES[::-1])))
        fh.write(samples.dumps(samples.sample_record(make(100.0, chosen="b2", x=(7.0, 0.25)))))
    ds = build_dataset(read_samples([str(path)]), min_samples=5)
    assert ds.ts[-1] == 100.0
    np.testing.assert_array_equal(ds.columns(NAMES)[-1], [0.25, 7.0])


def test_unreadable_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(TrainInputError, match="no such samples file"):
        expand_sources([str(tmp_path / "missing.jsonl")])
    with pytest.raises(TrainInputError, match="no file matches"):
        expand_sources([str(tmp_path / "*.jsonl")])
    bad = tmp_path / "nan.jsonl"
    bad.write_bytes(samples.dumps(samples.header_record(NAMES)) + b'{"type": "sample", "rtt_s": NaN}\n')
    with pytest.raises(TrainInputError, match="line 2: NaN/Infinity"):
        read_samples([str(bad)])


def test_time_split_has_no_leakage() -> None:
    rng = np.random.default_rng(3)
    ts = np.round(rng.uniform(0, 50, size=1000))  # many ties
    sp = time_split(ts)
    assert len(sp.train) + len(sp.val) + len(sp.test) == 1000
    assert ts[sp.train].max() < ts[sp.val].min()
    assert ts[sp.val].max() < ts[sp.test].min()
    with pytest.raises(TrainInputError, match="distinct timestamps"):
        time_split(np.zeros(100))


def test_synthetic_recording_reads_in_the_real_format(synth_dataset: Dataset) -> None:
    ds = synth_dataset
    assert ds.names[: len(feature_names())] == feature_names()
    assert ds.backends == ("b1", "b2", "b3")
    assert (np.diff(ds.ts) >= 0).all()
    assert 0.02 < ds.explore.mean() < 0.3
    assert sum(ds.dropped.values()) > 0


def test_samples_round_trip_through_a_buffer_too() -> None:
    buf = io.BytesIO(
        samples.dumps(samples.header_record(NAMES)) + samples.dumps(samples.sample_record(make(1.0)))
    )
    (only,) = list(samples.iter_samples(buf))
    assert only.chosen_candidate() is not None
