"""``predicted``: route to the backend with the lowest predicted RTT, with safeguards.

Per decision (Morpheus, arXiv 2510.20506; Accurate Performance Predictors for Edge Computing
Applications, arXiv 2510.20495): fill one row per candidate from the feature snapshot and the
proxy-local signals, score all rows in one onnxruntime call, take the lowest prediction.

Herding. Workers and replicas read the same agent features, which change only every agent
interval; if all of them sent every request to the single argmin, the best backend would be
flooded between two updates. Two corrections, both cheap:
  * the power of d choices (Mitzenmacher 2001; Prequal's probing of a few): for a model that does
    not read this proxy's in-flight count, score a random subset of 3 candidates, not all, so
    concurrent deciders spread out while still avoiding the slowest backends (a model that reads
    it scores every candidate, up to ``max_scored``: its own dispatches move its predictions);
  * an in-flight correction: the cost is ``pred * (1 + inflight_penalty * in_flight)``, which
    reacts to this worker's own dispatches at once, before any agent reports them;
  * equal predictions (backends the model cannot tell apart) go to the candidate with fewer
    requests in flight, never to the first listed (``two_lowest``).

Safeguards (vPALs: a learned predictor must be able to do no harm). The decision falls back to
``peak_ewma`` and counts the reason when: there is no model (``no_model``); a candidate has no
feature vector or one older than the staleness bound (``stale``); an input lies outside the
training range beyond the tolerance (``ood``); the rolling live accuracy is below the threshold
(``accuracy``); decisions exceed their time budget (``slow``); scoring failed (``error``).
While the accuracy safeguard holds, the model still scores the chosen backend so that its live
accuracy keeps being measured and it can come back by itself.

Cost. A model whose only per-endpoint input is the in-flight count (or none) is answered from
per-snapshot prediction tables (``proxy.predict.assembler``, "Prediction tables"): each cell
(backend row, in-flight count, request kind) is filled the first time a decision scores it, and
later decisions are list lookups, exact by construction. A decision whose candidates' cells are
all filled runs in C from start to finish (``_fastpick.decide``, reading the plan ``_fast_plan``
builds per bound snapshot); anything else takes the Python path (``_decide``), its reference.
A new snapshot keeps the table rows of every backend whose model inputs did not change (agents
re-send the same values with a new timestamp; only the sample time moves), so a refresh
costs misses only for the backends that actually changed, and ``prefill`` scores those when the
snapshot arrives, between requests, so that decisions read rather than score. Models that read
peak-EWMA or feature age are scored per decision: one batched onnxruntime call on a
preallocated, IO-bound buffer. Feedback from completed tries (RTT median, live accuracy,
prediction error) is applied in batches (``proxy.predict.feedback``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from predictor_runtime.calibration import DEFAULT_WINDOW, LevelCalibration

from ..predict import assembler
from ..predict.decision_budget import DecisionBudget
from ..predict.feedback import Feedback
from ..predict.live_accuracy import LiveAccuracy
from ..predict.min_accuracy import default_floor
from ..predict.model_holder import LoadedModel, ModelHolder
from .base import Endpoint, Policy, RequestInfo

log = logging.getLogger("presage.predicted")

FALLBACK_REASONS: tuple[str, ...] = ("no_model", "stale", "ood", "accuracy", "slow", "error")
MAX_TABLES = 256  # cached prediction tables per snapshot (one per request kind)
PREFILL_DEPTH = 4  # in-flight counts per row ``prefill`` starts with
MAX_PREFILL_DEPTH = 16
# ``prefill`` runs on the event loop between requests: it scores at most this many cells per
# snapshot (~0.2 ms for a 120-tree ensemble), for at most PREFILL_KINDS request kinds (the latest
# to appear); the rest are scored by the decisions that need them, as without prefill
MAX_PREFILL_CELLS = 256
PREFILL_KINDS = 8

Table = list[list[float] | None] | assembler.OutOfRange


class FeatureSource(Protocol):
    """The proxy's feature store: ``snapshot`` is an immutable ``FeatureSnapshot`` (or None)."""

    snapshot: Any


SAMPLED_CHOICES = 3  # candidates scored when the model cannot see its own dispatches
SMALL_SAMPLE = 8
IN_FLIGHT_INPUT = "proxy_in_flight"


@dataclass(frozen=True, slots=True)
class PredictedSettings:
    # Candidates scored per decision (0: all, up to max_scored); see "Herding" above. None: all
    # when the model reads this proxy's in-flight count, else SAMPLED_CHOICES. A model that reads
    # in-flight corrects its own herding at every dispatch (the count it sees rises with each
    # request it sends), so sampling only throws information away: on the testbed's full scenario
    # (one proxy, six backends, the same LightGBM bundle and rounds) scoring all six ran at
    # 0.59x HAProxy's mean RTT and 0.49x its p99, scoring three at 0.69-0.89x and 0.69-0.83x.
    # A model without it sees nothing move between agent updates and would send every request to
    # one argmin: it samples. Three, not two: in the simulator (presage simulate --sweep,
    # sensitivity "choices") scoring 3 let predicted beat Prequal at almost any accuracy where 2
    # needed 77%.
    choices: int | None = None
    max_scored: int = 64  # hard cap when choices is 0, so 1,000 backends stay flat
    inflight_penalty: float = 0.0
    stale_after_s: float = 3.0
    ood_tolerance: float = 0.25  # share of the training span allowed beyond min/max
    # None: relative to the loaded bundle's held-out accuracy (min_accuracy.default_floor); a number
    # is an absolute floor (the simulator's: min_accuracy.DEFAULT_MIN_ACCURACY); 0 turns it off
    min_accuracy: float | None = None
    accuracy_window: int = 500
    min_observations: int = 50
    # The live refit of the model's level (predictor_runtime.calibration): the last N completed
    # requests; 0 keeps the bundle's own level. It never changes a routing decision.
    calibration_window: int = DEFAULT_WINDOW
    # The breaker trips at the seed papers' ceiling, a decision costing 10% of the median RTT: it
    # guards against harm. The 1% target is what `presage train` selects models for and what the
    # benchmarks report; on a loaded 2-core box a 1% breaker (about 110 us at an 11 ms RTT) opened
    # on scheduler noise alone and routed most of a quick shoot-out by the fallback.
    budget_frac: float = 0.1  # decision time budget as a share of the median RTT
    min_budget_s: float = 50e-6
    budget_cooldown_s: float = 5.0
    reload_interval_s: float = 1.0  # how often the model path / Redis key is checked for a new bundle

    def __post_init__(self) -> None:
        checks = {
            "choices": self.choices is None or (self.choices >= 0 and self.choices != 1),
            "max_scored": self.max_scored >= 2,
            "inflight_penalty": self.inflight_penalty >= 0,
            "stale_after_s": self.stale_after_s > 0,
            "ood_tolerance": self.ood_tolerance >= 0,
            "min_accuracy": self.min_accuracy is None or 0.0 <= self.min_accuracy < 1.0,
            "accuracy_window": self.accuracy_window >= 1,
            "min_observations": 1 <= self.min_observations <= self.accuracy_window,
            "calibration_window": self.calibration_window >= 0,
            "budget_frac": 0.0 < self.budget_frac <= 0.1,
            "min_budget_s": self.min_budget_s > 0,
            "budget_cooldown_s": self.budget_cooldown_s >= 0,
            "reload_interval_s": self.reload_interval_s > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"predicted.{bad[0]}: invalid value {getattr(self, bad[0])!r}")

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> PredictedSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"predicted.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        return cls(**raw)


@dataclass(slots=True)
class Decision:
    """What a decision knew; read by the data plane for accuracy, hedging and the explain header.
    Built whole (positionally on the model path: keyword arguments cost a dict's worth of work
    per decision) and not changed afterwards."""

    endpoint: Endpoint | None
    predicted_s: float = math.nan  # prediction for the chosen endpoint
    runner_up: Endpoint | None = None
    runner_up_s: float = math.nan
    fallback: str | None = None  # reason when routed by the fallback policy
    duration_s: float = 0.0
    scored: Sequence[Endpoint] = ()  # the candidates the model scored, and their predictions
    preds: Sequence[float] | None = None

    def prediction_for(self, ep: Endpoint | None) -> float:
        """The model's prediction for ``ep`` if it was scored (shadow mode asks for the live
        policy's choice; the accuracy safeguard for the fallback's), else NaN."""
        return prediction_among(self.scored, self.preds, ep)


def prediction_among(scored: Sequence[Endpoint], preds: Sequence[float] | None, ep: Endpoint | None) -> float:
    """``ep``'s prediction among the ``scored`` candidates' ``preds``, NaN if it was not scored."""
    if preds is None or ep is None:
        return math.nan
    for i, cand in enumerate(scored):
        if cand is ep:
            return float(preds[i])
    return math.nan


def sample_indices(n: int, d: int, random: Callable[[], float]) -> list[int]:
    """``d`` distinct indices drawn uniformly from ``range(n)``, with ``d`` calls to ``random``.

    Floyd's algorithm (Bentley & Floyd, "A sample of brilliance", CACM 30(9), 1987): for
    ``j = n-d .. n-1`` draw ``t`` from ``[0, j]``, keep ``t`` unless already kept, else keep ``j``;
    every d-subset is equally likely. ``random.Random.sample`` costs ~3 us for three of sixteen
    (it checks the population's type and draws bits per index); this costs under 1 us.
    """
    out: list[int] = []
    if d <= SMALL_SAMPLE:  # a list's membership test beats hashing for a few
        for j in range(n - d, n):
            t = int(random() * (j + 1))
            out.append(j if t in out else t)
        return out
    kept: set[int] = set()  # 64 of 1,000: a list's test would cost ~2,000 comparisons a decision
    for j in range(n - d, n):
        t = int(random() * (j + 1))
        if t in kept:
            t = j
        kept.add(t)
        out.append(t)
    return out


def two_lowest(costs: Sequence[float], candidates: Sequence[Endpoint]) -> tuple[int, int]:
    """Indices of the lowest and second-lowest of ``costs`` (at least two), in the order a stable
    sort by (cost, in-flight) gives: one pass, no sort for a handful of candidates.

    Equal costs are common, not a corner case: a tree ensemble is piecewise constant, a table cell
    is shared by every backend the model cannot tell apart (one it was not trained on has no
    one-hot column), and a model that does not read in-flight gives equal backends equal scores.
    Breaking such ties by list position would send all of them to the first backend; the one with
    fewer requests in flight goes first instead (least-request's rule), then the earlier."""
    c0, c1 = costs[0], costs[1]
    if c1 < c0 or (c1 == c0 and candidates[1].in_flight < candidates[0].in_flight):
        best, second, low, next_low = 1, 0, c1, c0
    else:
        best, second, low, next_low = 0, 1, c0, c1
    for i in range(2, len(costs)):
        c = costs[i]
        if c > next_low:
            continue
        if c < low or (c == low and candidates[i].in_flight < candidates[best].in_flight):
            best, second, low, next_low = i, best, c, low
        elif c < next_low or candidates[i].in_flight < candidates[second].in_flight:
            second, next_low = i, c
    return best, second


def table_preds(
    candidates: Sequence[Endpoint],
    row_of: dict[str, int],
    fresh_until: list[float],
    table: list[list[float] | None],
    wall: float,
    reads_flight: bool,
) -> list[float] | None:
    """The candidates' predictions from a prediction table, or None at the first miss: a backend
    without a row, a vector stale at ``wall`` (or never seen: NaN), a row with no cell scored, an
    in-flight count beyond the table's levels, a cell not scored yet (NaN). The cell read is the
    candidate's in-flight count when the model reads it, else 0.

    The misses are rare and each raises on the lookup that fails, so the common path is one
    lookup chain per candidate: KeyError (no row), TypeError (``None[n]``), IndexError (beyond
    the levels)."""
    preds = []
    try:
        for ep in candidates:
            row = row_of[ep.id]
            if not wall <= fresh_until[row]:  # stale, or never seen (NaN)
                return None
            pred = table[row][ep.in_flight if reads_flight else 0]  # type: ignore[index]
            if pred != pred:  # NaN: not scored yet
                return None
            preds.append(pred)
    except (KeyError, TypeError, IndexError):
        return None
    return preds


# The per-request table path in C when the extension was built (``_fastpick.c``: the same
# answers, checked against the Python code here by tests/proxy/balancer/test_fastpick.py and
# tests/proxy/predict/test_fast_decide.py): ``decide`` for a whole table hit, and the two loops
# for the Python path. Measured with ``python -m loadtest.bench_instructions``: see the README,
# "Prediction cost".
_decide_table: Callable[..., Decision | None] | None
try:
    from ._fastpick import decide as _fast_decide
    from ._fastpick import tabulated as _table_preds
    from ._fastpick import two_lowest as _two_lowest

    _decide_table = _fast_decide
except ImportError:  # installed without a C compiler: the same code, interpreted
    _table_preds, _two_lowest, _decide_table = table_preds, two_lowest, None
FAST_PATH = _table_preds is not table_preds


class PredictedPolicy:
    name = "predicted"

    def __init__(
        self,
        *,
        holder: ModelHolder,
        features: FeatureSource,
        fallback: Policy,
        settings: PredictedSettings | None = None,
        on_fallback: Callable[[str], None] | None = None,
        on_duration: Callable[[float], None] | None = None,
        perf_counter: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or PredictedSettings()
        self.holder = holder
        self.features = features
        self.fallback = fallback
        self.on_fallback = on_fallback
        # each decision's wall time (the runtime passes its histogram buffer's ``append``)
        self.on_duration = on_duration
        self.perf_counter = perf_counter
        # Feature vectors carry the agents' wall-clock sample time; the pool's ``now`` is monotonic.
        self.wall_clock = wall_clock
        s = self.settings
        self.accuracy = LiveAccuracy(s.accuracy_window, min_observations=s.min_observations)
        # the model's level refitted on live traffic: applied to every absolute use of a
        # prediction (live accuracy, the gauge, the explain header, the hedge delay), never to a
        # choice, which one factor for all backends cannot change
        self.calibration = LevelCalibration(
            s.calibration_window, min_observations=min(s.min_observations, max(s.calibration_window, 1))
        )
        self.budget = DecisionBudget(
            budget_frac=s.budget_frac, min_budget_s=s.min_budget_s, cooldown_s=s.budget_cooldown_s
        )
        # completed tries, applied in batches; the runtime points its histogram at the metrics
        self.feedback = Feedback(self, None)
        self.fallbacks: dict[str, int] = dict.fromkeys(FALLBACK_REASONS, 0)
        self.ood_features: dict[str, int] = {}
        self.table_hits = 0  # model decisions answered from a prediction table, without scoring
        self.last: Decision = Decision(None)
        # the C table path (``_fastpick.decide``) when built; tests turn it off, before the first
        # decision, to compare (it takes effect at the next ``_bind``)
        self.fast = _decide_table is not None
        self._plan: tuple[Any, ...] | None = None  # what it reads (``_fast_plan``), per bound plan
        self._bound: assembler.BoundInputs | None = None
        # what ``_bound`` was built from, held (not their ids: a freed snapshot's id can be reused)
        self._bound_snap: Any = None
        # per row of ``_bound``: the wall time until which its vector is fresh (sample time +
        # ``stale_after_s``; NaN for a backend without a vector, which no comparison passes)
        self._fresh_until: list[float] = []
        self._bound_model: LoadedModel | None = None
        self._request: RequestInfo | None = None  # the last request seen and its table key:
        self._request_key: tuple[float, ...] = ()  # the data plane shares infos between tries
        # per request kind: per snapshot row, its predictions at in-flight 0..levels-1 (None until
        # first needed), or the request input that puts the kind out of range
        self._tables: dict[tuple[float, ...], Table] = {}
        self._depth = PREFILL_DEPTH  # in-flight counts ``prefill`` scores per row (grows with use)
        self._refill: dict[tuple[float, ...], list[int]] = {}  # per kind: rows for ``prefill``
        current = getattr(holder, "current", None)
        self._floor = self._floor_for(current)
        self._choices = self._choices_for(current)
        holder.on_swap(self._model_swapped)

    # -- the Policy surface ------------------------------------------------------------------
    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        # ``decide``, with its table path inline: one Python frame less on every request
        plan = self._plan
        if plan is not None and len(endpoints) > 1:
            started = self.perf_counter()
            d = _decide_table(plan, endpoints, request, now, started)  # type: ignore[misc]
            if d is not None:
                self.table_hits += 1
            else:
                d = self._decide(endpoints, request, rng, now, started)
        else:
            d = self.decide(endpoints, request, rng, now)
        self.last = d
        return d.endpoint

    def decide(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Decision:
        n = len(endpoints)
        if n < 2:
            return Decision(endpoints[0] if n else None)
        started = self.perf_counter()
        plan = self._plan
        if plan is not None:  # a table hit, decided in C (``_fastpick.decide``), or None: below
            hit = _decide_table(plan, endpoints, request, now, started)  # type: ignore[misc]
            if hit is not None:
                self.table_hits += 1
                return hit
        return self._decide(endpoints, request, rng, now, started)

    def _decide(
        self,
        endpoints: Sequence[Endpoint],
        request: RequestInfo,
        rng: random.Random,
        now: float,
        started: float,
    ) -> Decision:
        """The Python path: every case, the reference for the C table path."""
        n = len(endpoints)
        model = self.holder.current
        if model is None:
            return self._fall_back("no_model", endpoints, request, rng, now, started)
        if now < self.budget.open_until:
            return self._fall_back("slow", endpoints, request, rng, now, started)
        d = self._choices  # score every candidate, or a random ``d`` of them ("Herding" above)
        candidates = endpoints if n <= d else [endpoints[i] for i in sample_indices(n, d, rng.random)]
        bound = self._bound  # ``_bind``'s own first test, inline: the plan changes a few times a second
        if bound is None or self._bound_snap is not self.features.snapshot or self._bound_model is not model:
            bound = self._bind(model)
        wall = self.wall_clock()
        # a tabulated model reads its cells; the general path scores (and fills them) on a miss
        preds = None
        if bound is not None and bound.levels:
            preds = self._tabulated(bound, candidates, request, wall)
        if preds is not None:
            self.table_hits += 1
        else:
            preds, reason = self._score(model, bound, candidates, request, now, wall)
            if preds is None:
                return self._fall_back(reason or "error", endpoints, request, rng, now, started)
        costs = preds
        penalty = self.settings.inflight_penalty
        if penalty:
            costs = [p * (1.0 + penalty * ep.in_flight) for p, ep in zip(preds, candidates, strict=True)]
        best, second = _two_lowest(costs, candidates)
        accuracy = self.accuracy.value
        # 1 - MAPE goes below zero for a model off by more than 100%: a floor of 0 turns it off
        if accuracy is not None and accuracy < self._floor:
            # keep measuring: predict the fallback's choice if it was among the scored candidates,
            # so that a recovered model can lift the safeguard by itself
            return self._fall_back("accuracy", endpoints, request, rng, now, started, candidates, preds)
        duration = self.perf_counter() - started
        self.budget.record(duration, now)
        if self.on_duration is not None:
            self.on_duration(duration)
        # predictions are Python floats already (``tolist`` or table cells)
        chosen, runner_up = candidates[best], candidates[second]
        return Decision(chosen, preds[best], runner_up, preds[second], None, duration, candidates, preds)

    # -- feedback from the data plane ----------------------------------------------------------
    def observe(self, predicted_s: float, rtt_s: float, ok: bool) -> float | None:
        """A routed request completed after ``rtt_s``; ``predicted_s`` is the model's prediction
        for the backend it went to (NaN if none). Returns the absolute percentage error of the
        calibrated prediction if scored.
        Failed tries are not accuracy evidence: a refused connection's RTT says nothing about
        service time."""
        if not ok:
            return None
        self.budget.observe_rtt(rtt_s)
        if predicted_s != predicted_s:  # NaN
            return None
        calibration = self.calibration
        ape = self.accuracy.record(predicted_s * calibration.scale, rtt_s)  # the level before this try
        calibration.record(predicted_s, rtt_s)
        return ape

    def describe(self, now: float) -> dict[str, Any]:
        self.feedback.flush()
        return {
            "live_accuracy": self.accuracy.accuracy(),
            "observations": self.accuracy.count,
            "calibration_scale": self.calibration.scale,
            "min_accuracy": self._floor if self._floor > float("-inf") else None,  # None: off
            "decision_budget_s": self.budget.budget_s,
            "median_rtt_s": self.budget.median_rtt_s,
            "budget_open": self.budget.is_open(now),
            "fallbacks": dict(self.fallbacks),
            "table_hits": self.table_hits,
            "ood_features": dict(sorted(self.ood_features.items(), key=lambda kv: -kv[1])[:10]),
            "model": self.holder.describe(),
        }

    # -- internals -----------------------------------------------------------------------------
    def _score(
        self,
        model: LoadedModel,
        bound: assembler.BoundInputs | None,
        candidates: Sequence[Endpoint],
        request: RequestInfo,
        now: float,
        wall: float,
    ) -> tuple[list[float] | None, str | None]:
        """Predicted RTTs of ``candidates`` (seconds) on ``bound``, the current plan, by one model
        call, or the reason the model cannot be used."""
        if bound is None:
            return None, "stale"
        rows = assembler.rows_for(bound, candidates, wall, self.settings.stale_after_s)
        if isinstance(rows, str):
            if isinstance(rows, assembler.OutOfRange):
                self._count_ood(rows.feature)
            return None, rows
        table = None
        if bound.levels:
            found = self._table_for(bound, request)
            if isinstance(found, assembler.OutOfRange):  # this kind of request is out of range
                self._count_ood(found.feature)
                return None, "ood"
            table = found  # ``_tabulated`` missed: score directly (``fill`` checks the in-flight range)
        x = model.scorer.input_buffer(len(rows))  # bound to the session: scoring it is one ORT call
        outside = assembler.fill(bound, rows, candidates, request, now, wall, x)
        if outside is not None:
            self._count_ood(outside)
            if table is not None and outside in assembler.REQ_KINDS:
                self._tables[self._key(bound, request)] = assembler.OutOfRange(outside)
            return None, "ood"
        preds, reason = self._run(model, x)
        if table is not None and preds is not None:
            self._store(bound, table, rows, candidates, preds)
        return preds, reason

    def _tabulated(
        self, bound: assembler.BoundInputs, candidates: Sequence[Endpoint], request: RequestInfo, wall: float
    ) -> list[float] | None:
        """The candidates' predictions when every cell is filled and every vector fresh, else None
        (then ``_score``'s general path finds the reason or scores and fills the cells).

        The hot path of a tabulated model, one lookup chain per candidate (``table_preds``, in C
        when built): a filled cell proves that its row's static inputs and that in-flight count
        were inside the training range when it was scored (``fill`` scores nothing out of range)
        for this very plan, so only staleness, which moves with the clock, is checked again."""
        key = self._request_key if request is self._request else self._key(bound, request)
        table = self._tables.get(key)
        if table.__class__ is not list:  # None: first of its kind; OutOfRange: out of range
            return None
        return _table_preds(
            candidates, bound.row_of, self._fresh_until, table, wall, bound.in_flight is not None
        )

    def _count_ood(self, feature: str) -> None:
        """Which inputs push decisions out of the training range: the operator's first question
        when ``ood`` fallbacks climb (retrain with more varied traffic, or widen the tolerance)."""
        if feature not in self.ood_features and len(self.ood_features) >= 64:
            feature = "other"
        self.ood_features[feature] = self.ood_features.get(feature, 0) + 1

    def _key(self, bound: assembler.BoundInputs, request: RequestInfo) -> tuple[float, ...]:
        """The request's table key, computed once per request (its retries and hedges reuse it)."""
        if request is not self._request:
            self._request, self._request_key = request, assembler.request_key(bound, request)
        return self._request_key

    def _table_for(self, bound: assembler.BoundInputs, request: RequestInfo) -> Table:
        key = self._key(bound, request)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= MAX_TABLES:  # request kinds are few; a flood of new ones is not
                self._tables.clear()
            table = self._tables[key] = [None] * len(bound.sample_ts)
        return table

    def _store(
        self,
        bound: assembler.BoundInputs,
        table: list[list[float] | None],
        rows: list[int],
        candidates: Sequence[Endpoint],
        preds: list[float],
    ) -> None:
        """Keep directly scored predictions in their cells: row, in-flight count (request kind)."""
        levels, flight = bound.levels, bound.in_flight
        deepest = 0
        for row, ep, pred in zip(rows, candidates, preds, strict=True):
            n = ep.in_flight if flight is not None else 0
            deepest = max(deepest, n)
            if n < levels:
                cells = table[row]
                if cells is None:
                    cells = table[row] = [math.nan] * levels
                cells[n] = pred
        if deepest >= self._depth:  # decisions reach deeper than prefill scores: score deeper
            self._depth = min(levels, deepest + 2, MAX_PREFILL_DEPTH)

    # -- off the request path -----------------------------------------------------------------
    def prefill(self) -> int:
        """Score the table cells decisions are about to read, so that they read instead of score.

        Called when the feature store publishes a snapshot (``on_snapshot``), i.e. between
        requests: binds the new plan and, in one onnxruntime call per request kind, scores again
        the rows decisions had been reading whose inputs the update changed, at in-flight
        0..depth-1 (``depth`` follows the deepest count decisions asked for). A request then finds
        its predictions in the table, and the decision costs list lookups rather than a model call.
        A tree ensemble's call is ~10 us while its nodes sit in the CPU cache, but a busy proxy
        reaches it with a cold cache, where the same call took ~100 us on this machine and most of
        a decision's 200-300 us on the testbed. Rows no decision has read (most of a large pool
        sampled a few at a time) are left to the decisions that need them: the work here follows
        what changed, not the pool's size. Returns the number of cells scored."""
        model = self.holder.current
        if model is None or not self._tables:
            return 0
        bound = self._bind(model)
        refill, self._refill = self._refill, {}
        if bound is None or not bound.levels or not refill:
            return 0
        flight = bound.in_flight
        depth = min(self._depth, bound.levels) if flight is not None else 1
        counts = [n for n in range(depth) if flight is None or flight.lo <= n <= flight.hi]
        scored = 0
        for key, rows in list(refill.items())[-PREFILL_KINDS:]:  # dicts keep insertion order
            table = self._tables.get(key)
            if table.__class__ is not list:  # this kind is out of range: nothing to score
                continue
            ok, ts = bound.static_ok, bound.sample_ts
            usable = [row for row in rows if ok[row] and ts[row] == ts[row]]  # in range, has a vector
            cells = [(row, n) for n in counts for row in usable]  # lowest counts first: read most
            cells = cells[: MAX_PREFILL_CELLS - scored]
            if not cells:
                continue
            preds, _ = self._run(model, assembler.kind_rows(bound, key, cells))
            if preds is None:
                return scored
            for (row, n), pred in zip(cells, preds, strict=True):
                row_cells = table[row]  # type: ignore[index]
                if row_cells is None:
                    row_cells = table[row] = [math.nan] * bound.levels  # type: ignore[index]
                row_cells[n] = pred
            scored += len(cells)
        return scored

    @staticmethod
    def _run(model: LoadedModel, x: np.ndarray) -> tuple[list[float] | None, str | None]:
        try:
            return model.scorer.score(x).tolist(), None
        except Exception as exc:  # an ORT failure must route by the fallback, not fail the request
            log.warning("scoring failed, routing by fallback: %s", exc)
            return None, "error"

    def _bind(self, model: LoadedModel) -> assembler.BoundInputs | None:
        snap = self.features.snapshot
        if snap is self._bound_snap and model is self._bound_model and self._bound is not None:
            return self._bound
        if snap is None:
            return None
        # a backend whose vector expired has no sample time: it is stale, never idle
        sample_ts = np.where(snap.has_vector, snap.sample_ts, np.nan)
        old = self._bound if model is self._bound_model else None
        bound = assembler.bind(  # the layout holds this model's ranges: reused for this model only
            model.feature_names, model.guard, snap.names, snap.backend_ids, snap.matrix, sample_ts,
            layout=old.layout if old is not None else None,
        )
        self._refill = {}  # row numbers of the previous plan: void now
        self._tables = self._carried_tables(old, bound) if old is not None else {}
        self._bound, self._bound_snap, self._bound_model = bound, snap, model
        stale_after = self.settings.stale_after_s
        self._fresh_until = [ts + stale_after for ts in bound.sample_ts]
        self._plan = self._fast_plan(bound, snap, model) if self.fast and bound.levels else None
        if bound.missing and (old is None or old.missing != bound.missing):
            log.warning("model inputs with no source (scored as 0): %s", ", ".join(bound.missing))
        return bound

    def _fast_plan(self, bound: assembler.BoundInputs, snap: Any, model: LoadedModel) -> tuple[Any, ...]:
        """What ``_fastpick.decide`` reads, in its ``P_*`` order: the objects whose live state it
        checks per decision (model holder, feature store, breaker, live accuracy), the plan's own
        (model, snapshot, rows, freshness deadlines, tables), and constants. Rebuilt by every
        ``_bind``; dropped by a model swap, which also changes the floor and the choices."""
        return (
            self.holder,
            self.features,
            self.budget,
            self.accuracy,
            model,
            snap,
            bound.row_of,
            self._fresh_until,
            self._tables,
            bound.in_flight is not None,
            tuple(d.slot for d in bound.per_request),
            [None, None],  # the last request seen and its table key (``_key``'s cache, for C)
            self._floor,
            self.settings.inflight_penalty,
            self._choices,
            self.wall_clock,
            self.perf_counter,
            self.on_duration,
            Decision,
        )

    def _carried_tables(self, old: assembler.BoundInputs, new: assembler.BoundInputs) -> dict[Any, Table]:
        """The old plan's tables re-indexed for the new one, keeping the rows of backends whose
        model inputs are unchanged: their predictions are the same by construction."""
        if old.levels != new.levels or not self._tables:
            return {}
        same = assembler.unchanged_rows(old, new)
        before: Sequence[int] = range(len(same))  # the backend's row in the old plan
        if old.row_of is not new.row_of:
            before = [old.row_of.get(bid, -1) for bid in new.row_of]
        carried: dict[Any, Table] = {}
        for key, table in self._tables.items():
            if table.__class__ is not list:  # a request kind out of range stays so (same model)
                carried[key] = table
                continue
            carried[key] = [None if src < 0 else table[src] for src in same]  # type: ignore[index]
            # rows decisions had used whose inputs changed: what ``prefill`` scores again
            dropped = [i for i, (src, prev) in enumerate(zip(same, before, strict=True))
                       if src < 0 <= prev and table[prev] is not None]  # type: ignore[index]  # fmt: skip
            if dropped:
                self._refill[key] = dropped
        return carried

    def _model_swapped(self, model: LoadedModel | None) -> None:
        # A new model's accuracy is its own: start measuring afresh; rebind columns lazily.
        self.feedback.flush()  # the old model's pending evidence belongs to the old window
        self.accuracy.reset()
        self.calibration.reset()  # and its level is its own
        self._bound = None
        self._bound_snap = self._bound_model = None
        self._plan = None
        self._tables = {}
        self._request = None  # its key was made for the old model's inputs
        self._refill = {}
        self._depth = PREFILL_DEPTH
        self._floor = self._floor_for(model)
        self._choices = self._choices_for(model)

    def _choices_for(self, model: LoadedModel | None) -> int:
        """Candidates scored per decision for ``model`` (see ``PredictedSettings.choices``)."""
        choices = self.settings.choices
        if choices is None:
            reads_in_flight = model is not None and IN_FLIGHT_INPUT in model.feature_names
            choices = 0 if reads_in_flight else SAMPLED_CHOICES
        return choices or self.settings.max_scored

    def _floor_for(self, model: LoadedModel | None) -> float:
        """The live-accuracy floor in force; a configured 0 turns the safeguard off (1 - MAPE itself
        goes below 0 for a model off by more than 100%, so 'off' must compare below everything)."""
        floor = self.settings.min_accuracy
        if floor is None:
            if model is None:
                return float("-inf")  # nothing to measure yet
            # live accuracy is measured at the MAPE-optimal level when the bundle was calibrated
            # by training or the proxy refits its level (the default)
            calibrated = model.scorer.scale != 1.0 or self.settings.calibration_window > 0
            return default_floor(model.accuracy, calibrated)
        return floor if floor > 0 else float("-inf")

    def _fall_back(
        self,
        reason: str,
        endpoints: Sequence[Endpoint],
        request: RequestInfo,
        rng: random.Random,
        now: float,
        started: float,
        scored: Sequence[Endpoint] = (),
        preds: Sequence[float] | None = None,
    ) -> Decision:
        """Route by the fallback policy, counting ``reason``; ``scored``/``preds``, when the model
        did score, give the fallback's choice its prediction (live accuracy keeps being measured).
        Fallback decisions are timed but not held against the decision budget."""
        self.fallbacks[reason] += 1
        if self.on_fallback is not None:
            self.on_fallback(reason)
        chosen = self.fallback.pick(endpoints, request, rng, now)
        duration = self.perf_counter() - started
        if self.on_duration is not None:
            self.on_duration(duration)
        predicted = prediction_among(scored, preds, chosen)
        return Decision(chosen, predicted, None, math.nan, reason, duration, scored, preds)
