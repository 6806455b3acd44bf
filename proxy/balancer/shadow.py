"""Shadow mode: route by one policy while a second one decides beside it, for evaluation only.

``--policy peak_ewma --shadow predicted`` sends every request where ``peak_ewma`` says, and asks
``predicted`` what it would have done. The tap (``proxy.predict.tap``) scores the live choice with
the shadow's model to measure the shadow's live accuracy and counts the shadow's choices, so an
operator can judge a model on production traffic before letting it route (the "dark launch" of a
learned component that vPALs recommends before trusting one).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import Endpoint, Policy, RequestInfo
from .predicted import Decision, PredictedPolicy


class ShadowPolicy:
    def __init__(self, live: Policy, shadow: PredictedPolicy, *, seed: int = 0x5AD0) -> None:
        self.live = live
        self.shadow = shadow
        self.name = live.name
        self.last_shadow: Decision = Decision(None)
        # the shadow's own draws come from a separate stream so that the live policy's sequence
        # of choices is the same with and without a shadow
        self.shadow_rng = random.Random(seed)

    def pick(
        self, endpoints: Sequence[Endpoint], request: RequestInfo, rng: random.Random, now: float
    ) -> Endpoint | None:
        chosen = self.live.pick(endpoints, request, rng, now)
        self.last_shadow = self.shadow.decide(endpoints, request, self.shadow_rng, now)
        return chosen
