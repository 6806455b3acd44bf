import io

import pytest

from predictor_runtime import samples


def _sample(ts: float) -> samples.Sample:
    return samples.Sample(
        ts=ts,
        id="r1",
        method="POST",
        req_bytes=10,
        req_class=256.0,
        policy="peak_ewma",
        explore=True,
        chosen="b2",
        rtt_s=0.01,
        status=200,
        candidates=(
            samples.Candidate("b1", (1.0, 2.0), (0.0, 0.01, 0.2)),
            samples.Candidate("b2", None, (1.0, 0.02, 9.0)),
        ),
        feature_names=("f1", "f2"),
        local_names=samples.LOCAL_FEATURES,
    )


def test_records_round_trip_through_a_file() -> None:
    buf = io.BytesIO()
    buf.write(samples.dumps(samples.header_record(("f1", "f2"))))
    for ts in (1.0, 2.0):
        buf.write(samples.dumps(samples.sample_record(_sample(ts))))
    buf.seek(0)
    got = list(samples.iter_samples(buf))
    assert got == [_sample(1.0), _sample(2.0)]
    chosen = got[0].chosen_candidate()
    assert chosen is not None and chosen.x is None


def test_sample_before_header_names_the_line() -> None:
    buf = io.BytesIO(b"\n" + samples.dumps(samples.sample_record(_sample(1.0))))
    with pytest.raises(samples.SampleFormatError, match="line 2"):
        list(samples.iter_samples(buf))


def test_class_value_keeps_numbers_and_buckets_names() -> None:
    assert samples.class_value("512") == 512.0
    assert samples.class_value(None) == 0.0
    heavy = samples.class_value("heavy")
    assert heavy == samples.class_value("heavy")  # stable across calls and processes
    assert 0 <= heavy < samples.CLASS_BUCKETS
