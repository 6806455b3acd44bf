"""The ``table`` family and the table floor: the per-cell MAPE-optimal constants a learned model must
beat on validation, exported like any model."""

from pathlib import Path

import numpy as np
import pytest

from metrics_agent import schema
from predictor_runtime.bundle import write_bundle
from predictor_runtime.train import assess, holdout, pipeline, zoo
from predictor_runtime.train.cli import _options, build_parser
from predictor_runtime.train.dataset import Dataset


def small_options(**overrides: object) -> pipeline.TrainOptions:
    base: dict[str, object] = {"zoo": zoo.ZooConfig.small(), "k_grid": (4, 8), "timing_calls": 100,
                               "progress": False, "per_backend": False}  # fmt: skip
    return pipeline.TrainOptions(**(base | overrides))  # type: ignore[arg-type]


BACKENDS = ("b1", "b2", "b3")
NOISE = tuple(n for n in schema.feature_names() if n.startswith(("app_", "cg_")))[:8]
NAMES = (*NOISE, "proxy_in_flight", "req_class", *(f"backend={b}" for b in BACKENDS))


def quiet_world(seed: int, n: int = 3000) -> Dataset:
    """A quiet regime: RTT depends only on backend, request class and in-flight count, log-normal
    scatter of a quarter, a skewed mix (most requests light, idle and on the fast backends); the
    agent columns are random walks that say nothing about RTT."""
    rng = np.random.default_rng(seed)
    b = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    cls = rng.choice([1.0, 2.0, 3.0], n, p=[0.7, 0.2, 0.1])
    inflight = np.minimum(rng.geometric(0.7, n) - 1, 6).astype(float)
    y = 0.02 * np.array([1.0, 2.0, 4.0])[b] * 3.0 ** (cls - 1) * (1 + 0.5 * inflight)
    y *= np.exp(rng.normal(0.0, 0.3, n))
    noise = np.cumsum(rng.normal(0, 1, (n, len(NOISE))), axis=0)
    onehot = (b[:, None] == np.arange(3)).astype(float)
    x = np.column_stack([noise, inflight, cls, onehot]).astype(np.float32)
    backend = np.array(BACKENDS, dtype=object)[b]
    ts = 1.7e9 + np.arange(n) * 0.05
    return Dataset(x, NAMES, y, ts, backend, np.ones(n, dtype=bool), BACKENDS, n)


def table_accuracy(train: Dataset, later: Dataset) -> float:
    """The MAPE-optimal constant per (backend, class, in-flight <= 4) fitted on ``train``, scored on
    ``later`` (a thin cell falls back to the global constant)."""

    def keys(ds: Dataset) -> list[tuple[object, ...]]:
        c = ds.columns(["req_class", "proxy_in_flight"])
        return list(zip(ds.backend, c[:, 0], np.minimum(c[:, 1], 4), strict=True))

    cells: dict[tuple[object, ...], list[float]] = {}
    for k, y in zip(keys(train), train.y, strict=True):
        cells.setdefault(k, []).append(y)
    table = {k: assess.weighted_median(np.array(v), 1 / np.array(v)) for k, v in cells.items() if len(v) >= 5}
    fallback = assess.weighted_median(train.y, 1 / train.y)
    pred = np.array([table.get(k, fallback) for k in keys(later)])
    return assess.accuracy_metrics(later.y, pred)["accuracy"]


def test_selection_on_a_skewed_quiet_world_is_not_below_the_per_cell_table(tmp_path: Path) -> None:
    train, later = quiet_world(1), quiet_world(2)
    # a budget no model misses (10% of a ~40 ms median): the decision-time part plays no role here
    result = pipeline.train(train, small_options(families=("lgbm", "rf"), budget_frac=0.1, table_floor=True))
    assert "table" in {c.family for c in result.candidates}
    assert all(c.fits_budget for c in result.candidates)
    write_bundle(tmp_path / "model", result.selected.onnx, result.meta())
    got = assess.accuracy_metrics(later.y, holdout.predict(holdout._load(tmp_path / "model"), later))
    # a learned model within ACCURACY_TIE of the table on validation may be chosen for its speed
    seen = {c.family: round(c.val["accuracy"], 4) for c in result.candidates}
    assert got["accuracy"] >= table_accuracy(train, later) - pipeline.ACCURACY_TIE, seen
    if result.selected.family == "table":  # its bundle reads only the table's inputs
        assert set(result.features) == {"req_class", "proxy_in_flight", *(f"backend={b}" for b in BACKENDS)}


def test_table_leaves_are_the_mape_optimal_constants_of_their_cells() -> None:
    ds = quiet_world(3)
    y_log = np.log(ds.y)
    model = zoo.fit("table", ds.x, y_log, NAMES, zoo.ZooConfig(table_min_leaf=5), 0, weight=1 / ds.y)
    pred = np.exp(zoo.predict(model, ds.x))
    cls, inflight = ds.columns(["req_class"])[:, 0], ds.columns(["proxy_in_flight"])[:, 0]
    cell = (ds.backend == "b1") & (cls == 1.0) & (inflight == 0)  # the most common cell
    expected = assess.weighted_median(ds.y[cell], 1 / ds.y[cell])
    assert np.allclose(pred[cell], expected, rtol=1e-6)
    # the agent columns are never read: the same request with other agent values scores the same
    shuffled = ds.x.copy()
    shuffled[:, : len(NOISE)] = np.random.default_rng(0).normal(0, 50, (len(ds), len(NOISE)))
    assert np.array_equal(zoo.predict(model, shuffled), zoo.predict(model, ds.x))


def test_table_never_predicts_faster_with_more_in_flight() -> None:
    ds = quiet_world(4)
    model = zoo.fit("table", ds.x, np.log(ds.y), NAMES, zoo.ZooConfig(), 0, weight=1 / ds.y)
    grid = np.repeat(ds.x[:1], 10, axis=0)
    grid[:, NAMES.index("proxy_in_flight")] = np.arange(10)
    assert (np.diff(zoo.predict(model, grid)) >= 0).all()


def test_inverse_rtt_weights_put_a_cell_at_its_mape_optimal_level() -> None:
    rng = np.random.default_rng(5)
    y = 0.01 * np.exp(rng.normal(0, 0.5, 4000))
    x = np.zeros((len(y), 1), dtype=np.float32)
    opts = small_options(inverse_rtt_weight=True)
    weighted = zoo.fit(
        "lgbm", x, np.log(y), ["req_class"], opts.zoo, 0, weight=pipeline._weight("lgbm", y, opts)
    )
    plain = zoo.fit("lgbm", x, np.log(y), ["req_class"], opts.zoo, 0)
    level_w, level_p = np.exp(zoo.predict(weighted, x[:1]))[0], np.exp(zoo.predict(plain, x[:1]))[0]
    optimal = assess.weighted_median(y, 1 / y)
    assert abs(level_w / optimal - 1) < 0.03
    assert level_p > 1.15 * optimal  # unweighted: near the median, e^(s^2) = 1.28 above

    def mape(level: float) -> float:
        return float(np.mean(np.abs(level - y) / y))

    assert mape(level_w) < mape(level_p)
    assert pipeline._weight("lgbm", y, small_options()) is None  # off by default
    assert pipeline._weight("table", y, small_options()) is not None  # the table always has them


@pytest.mark.parametrize(
    ("argv", "families"),
    [
        ([], ("ridge", "rf", "lgbm", "mlp", "table")),
        (["--families", "lgbm,rf"], ("lgbm", "rf", "table")),
        (["--families", "lgbm,rf", "--table-floor"], ("lgbm", "rf", "table")),
        (["--families", "lgbm,rf", "--no-table-floor"], ("lgbm", "rf")),
        (["--families", "table,lgbm"], ("table", "lgbm")),
    ],
)
def test_the_table_floor_joins_the_families_unless_switched_off(
    argv: list[str], families: tuple[str, ...]
) -> None:
    args = build_parser().parse_args(["--data", "x", "--out", "y", *argv])
    assert pipeline.candidate_families(_options(args)) == families


def test_weight_flag() -> None:
    parser = build_parser()
    assert not _options(parser.parse_args(["--data", "x", "--out", "y"])).inverse_rtt_weight
    assert _options(
        parser.parse_args(["--data", "x", "--out", "y", "--weight-inverse-rtt"])
    ).inverse_rtt_weight


def cand(family: str, acc: float, *, rank: float | None = None, p99_us: float = 20.0) -> pipeline.Candidate:
    """A candidate as ``_select`` sees it: validation accuracy, Spearman when ``rank`` is given, p99."""
    val = {"accuracy": acc, "r2": 0.5} | ({} if rank is None else {"spearman": rank})
    c = pipeline.Candidate(family, val=val, inference={"p99_s": p99_us * 1e-6})
    c.fits_budget = True
    return c


def test_a_learned_model_ships_only_when_it_beats_the_table_by_more_than_the_tie() -> None:
    tie = pipeline.ACCURACY_TIE
    table = cand("table", 0.70, p99_us=50.0)  # even when slower, as a busy machine may measure it
    assert pipeline._select([cand("lgbm", 0.70 + tie / 2), table]).family == "table"
    assert pipeline._select([cand("lgbm", 0.70 + 3 * tie), table]).family == "lgbm"
    over_budget = cand("table", 0.80, p99_us=5000.0)
    over_budget.fits_budget = False
    assert pipeline._select([cand("lgbm", 0.70), over_budget]).family == "lgbm"


def test_the_table_is_no_floor_when_it_ranks_backends_worse() -> None:
    tie = pipeline.SPEARMAN_TIE
    # the most accurate, but orders backends worse than LightGBM by more than the tie: LightGBM
    worse = cand("table", 0.70, rank=0.90 - 2 * tie)
    chosen = pipeline._select([cand("lgbm", 0.60, rank=0.90), cand("rf", 0.55, rank=0.85), worse])
    assert chosen.family == "lgbm"
    # within the tie on ranking, it is the floor again
    chosen = pipeline._select([cand("lgbm", 0.60, rank=0.90), cand("table", 0.70, rank=0.90 - tie / 2)])
    assert chosen.family == "table"
    # a table alone (no learned model fits) still ships
    assert pipeline._select([cand("table", 0.70, rank=0.5)]).family == "table"


def test_the_report_says_why_a_more_accurate_table_did_not_ship() -> None:
    from types import SimpleNamespace

    from predictor_runtime.train.report import _table_note

    def note_on(cands: list[pipeline.Candidate]) -> str:
        selected = pipeline._select(cands)  # what marks a table it leaves out
        return " ".join(_table_note(SimpleNamespace(candidates=cands, selected=selected)))  # type: ignore[arg-type]

    note = note_on([cand("lgbm", 0.60, rank=0.90), cand("table", 0.70, rank=0.81)])
    assert "more accurate on validation (70.00% against 60.00%)" in note
    assert "Spearman 0.810 against the best learned model's 0.900" in note
    beaten = [cand("lgbm", 0.60, rank=0.90), cand("table", 0.50, rank=0.95)]
    assert "It beat the per-cell table" in note_on(beaten)
    # left out for its ranking though less accurate anyway: the note does not call it more accurate
    note = note_on([cand("lgbm", 0.60, rank=0.90), cand("table", 0.55, rank=0.81)])
    assert "scored on validation (55.00% against 60.00%) but ordered backends worse" in note
    # a table that does not beat the mean (validation R2 <= 0) is left out for that, not its ranking
    weak = cand("table", 0.70, rank=0.81)
    weak.val["r2"] = -0.1
    note = note_on([cand("lgbm", 0.60, rank=0.90), weak])
    assert "ordered backends worse" not in note and "It beat" not in note
    assert "left out: it does not beat predicting the mean there (R2 -0.100)" in note


def test_the_scored_decision_cost_is_an_option_named_in_its_error() -> None:
    from predictor_runtime.train.dataset import TrainInputError

    parser = build_parser()
    default = _options(parser.parse_args(["--data", "x", "--out", "y"]))
    assert default.scored_decision_s == pytest.approx(300e-6)
    opts = _options(parser.parse_args(["--data", "x", "--out", "y", "--scored-decision-us", "80"]))
    assert opts.scored_decision_s == pytest.approx(80e-6)
    with pytest.raises(TrainInputError, match="--scored-decision-us"):
        _options(parser.parse_args(["--data", "x", "--out", "y", "--scored-decision-us", "-1"]))
