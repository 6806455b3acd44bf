import math

import orjson
import pytest

from metrics_agent import schema


def _vector(**over: object) -> schema.FeatureVector:
    n = len(schema.feature_names())
    fields: dict[str, object] = {
        "backend": "b1",
        "seq": 1,
        "ts": 100.0,
        "windows": schema.DEFAULT_WINDOWS,
        "values": tuple(float(i) for i in range(n)),
    }
    fields.update(over)
    return schema.FeatureVector(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_value_in_schema_order() -> None:
    vec = _vector(missing=("gpu_util",))
    back = schema.decode(schema.encode(vec))
    assert back == vec
    assert back.as_dict()["host_cpu_util"] == 0.0
    assert list(back.as_dict())[:2] == ["host_cpu_util", "host_cpu_util.mean_5s"]


def test_feature_names_follow_windows() -> None:
    names = schema.feature_names((10,))
    assert len(names) == len(schema.BASE_METRICS) * 4
    assert "app_queue_length.slope_10s" in names


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (orjson.dumps({"v": 99}), "version"),
        (orjson.dumps({"v": 1, "backend": "b", "seq": 1, "ts": 1.0, "windows": [5]}), "field"),
        (
            orjson.dumps({"v": 1, "backend": "b", "seq": 1, "ts": 1.0, "windows": [5], "values": [1.0]}),
            "length",
        ),
        (
            orjson.dumps({"v": 1, "backend": "b", "seq": 1, "ts": 1.0, "windows": [5], "values": ["x"]}),
            "type",
        ),
    ],
)
def test_bad_vectors_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(schema.SchemaError) as info:
        schema.decode(raw)
    assert info.value.reason == reason


def test_non_finite_values_are_rejected() -> None:
    n = len(schema.feature_names())
    with pytest.raises(schema.SchemaError) as info:
        _vector(values=(math.inf,) + (0.0,) * (n - 1))
    assert info.value.reason == "non_finite"
    # orjson writes NaN as null: the reader must refuse it, not coerce it to 0
    raw = orjson.dumps(
        {
            "v": 1,
            "backend": "b",
            "seq": 1,
            "ts": 1.0,
            "windows": [5, 20, 60],
            "values": [math.nan] + [0.0] * (n - 1),
        }
    )
    with pytest.raises(schema.SchemaError):
        schema.decode(raw)
