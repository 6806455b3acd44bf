"""``predicted`` and ``oracle``: route to the lowest predicted RTT, with a predictor of set accuracy.

What the predictor knows is a choice, made explicit by the scenario's ``view``:

* ``true`` (default): the *true expected completion time at dispatch*,
  ``E_b = wait_b + m_k * slow_b(t) / cap_b``: the exact FCFS wait (the work already committed to
  backend ``b``'s workers, ``max(0, min free time - t)``) plus the mean service time of this
  request's class ``k`` on ``b`` in its current interference state. The wait is the realised one:
  this view knows the service times of the requests already queued (a backend could report its
  queued work), and only this request's own service time is uncertain. Staleness and the number
  of proxies do not touch this view; every model error is in the noise.
* ``stale``: what a Presage proxy can know: the agent's last delivered report (requests at the
  backend ``n_r`` and its interference state, ``interval_s`` apart and ``delay_s`` late) corrected
  by this proxy's own dispatches and completions since that report:
  ``n = max(0, n_r + local_now - local_at_report)``, then the M/M/c estimate
  ``E_b = (max(0, n - c + 1) * m / c + m_k) * slow_r / cap_b`` (the newcomer waits for
  ``n - c + 1`` departures, each ``m / c`` apart on average; ``m`` the mean service time).
  Other proxies' load since the report is invisible: the source of herding.

The prediction is ``E_b * X`` with log-normal noise ``X`` whose ``1 - MAPE`` equals ``accuracy``
(``noise``), drawn independently per candidate and decision. The cost is
``pred * (1 + inflight_penalty * local in-flight)``; the lowest cost among ``choices`` random
distinct candidates (0: all backends) wins, as the proxy's ``predicted`` policy does.

``oracle`` is ``predicted`` with the true view, no noise and every backend scored: greedy
least-expected-completion-time routing, the lower bound the others are measured against (greedy is
not optimal for the fleet, so a noisy ``predicted`` can occasionally edge past it).
"""

from __future__ import annotations

import numpy as np

from ..noise import sigma_for_accuracy
from .base import SimPolicy, distinct_choices


class Predicted(SimPolicy):
    name = "predicted"

    def __init__(
        self, accuracy: float = 1.0, *, choices: int | None = None, view: str | None = None, name: str = ""
    ) -> None:
        super().__init__()
        if not accuracy <= 1.0:
            raise ValueError(f"accuracy: {accuracy!r} is above 1")
        self.accuracy = accuracy
        self.sigma = sigma_for_accuracy(accuracy)
        self._choices, self._view = choices, view
        self.name = name or self.name

    def setup(self) -> None:
        sc, st = self.scenario, self.state
        d = sc.choices if self._choices is None else self._choices
        self.d = 0 if d >= st.n else d
        self.stale = (self._view or sc.view) == "stale"
        self.needs_reports = self.stale
        self.penalty = sc.inflight_penalty
        self.class_mean = [sc.service_mean_s * f for f in sc.class_factors]
        self.mean_all = sc.service_mean_s * sc.mean_factor
        self.preds: list[float] = []
        self.truth: list[float] = []
        if self.d == 0:
            self._setup_vectorised()

    def _setup_vectorised(self) -> None:
        st = self.state
        self.next_free = np.zeros(st.n)
        self.local_arr = np.zeros((st.proxies, st.n))
        self.class_service = [m * st.inv_cap_arr for m in self.class_mean]
        self.track_local = self.stale or self.penalty > 0.0
        self.dispatched = self._on_dispatch
        if self.track_local:
            self.observe = self._on_complete

    def prepare(self, cls: list[int]) -> None:
        m, n = len(cls), self.state.n
        self.cls = cls
        width = self.d or n
        if self.d:
            self.cand: list[list[int]] = distinct_choices(self.rng, n, m, self.d).tolist()
        if self.sigma > 0.0:
            noise = np.exp(self.sigma * self.noise_rng.standard_normal((m, width)))
            self.noise = noise if not self.d else noise.tolist()

    def pick(self, j: int, t: float, p: int) -> int:
        return self._pick_all(j, t, p) if self.d == 0 else self._pick_some(j, t, p)

    def _pick_some(self, j: int, t: float, p: int) -> int:
        mk = self.class_mean[self.cls[j]]
        noise = self.noise[j] if self.sigma > 0.0 else None
        local, pen = self.state.local[p], self.penalty
        best, best_cost, best_pred = -1, float("inf"), 0.0
        for k, b in enumerate(self.cand[j]):
            e = self._stale_expected(b, p, mk) if self.stale else self.true_expected(b, t, mk)
            pred = e * noise[k] if noise is not None else e
            cost = pred * (1.0 + pen * local[b]) if pen else pred
            if cost < best_cost:
                best, best_cost, best_pred = b, cost, pred
        self._record(best, t, mk, best_pred)
        return best

    def _pick_all(self, j: int, t: float, p: int) -> int:
        st, k = self.state, self.cls[j]
        if self.stale:
            n = np.maximum(st.report_n + self.local_arr[p] - st.report_local[p], 0.0)
            queued = np.maximum(n - st.servers_arr + 1.0, 0.0)
            est = (queued * (self.mean_all / st.servers_arr) + self.class_mean[k]) * st.inv_cap_arr
            est *= st.report_slow
        else:
            est = np.maximum(self.next_free - t, 0.0) + self.class_service[k] * st.slow_arr
        pred = est * self.noise[j] if self.sigma > 0.0 else est
        cost = pred * (1.0 + self.penalty * self.local_arr[p]) if self.penalty else pred
        b = int(cost.argmin())
        self._record(b, t, self.class_mean[k], float(pred[b]))
        return b

    def true_expected(self, b: int, t: float, mk: float) -> float:
        st = self.state
        f = st.free[b][0]
        return (f - t if f > t else 0.0) + mk * st.inv_cap[b] * st.slow_now[b]

    def _stale_expected(self, b: int, p: int, mk: float) -> float:
        st = self.state
        n = st.report_n[b] + st.local[p][b] - st.report_local[p, b]
        c = st.servers[b]
        queued = n - c + 1.0
        wait = queued * self.mean_all / c if queued > 0.0 else 0.0
        return float((wait + mk) * st.inv_cap[b] * st.report_slow[b])

    def _record(self, b: int, t: float, mk: float, pred: float) -> None:
        self.preds.append(pred)
        self.truth.append(self.true_expected(b, t, mk))

    def _on_dispatch(self, b: int, p: int, next_free: float) -> None:
        self.next_free[b] = next_free
        if self.track_local:
            self.local_arr[p, b] += 1.0

    def _on_complete(self, b: int, p: int, rtt: float, now: float) -> None:
        self.local_arr[p, b] -= 1.0

    def records(self) -> dict[str, np.ndarray]:
        return {"pred_s": np.asarray(self.preds), "expected_s": np.asarray(self.truth)}


def oracle() -> Predicted:
    return Predicted(1.0, choices=0, view="true", name="oracle")
