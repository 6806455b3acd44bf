"""What the shoot-out compares: Presage's policies, HAProxy and NGINX, and the oracle reference.

One table, one row per contender, chosen by name on the command line (``--policies``). The names
are the row labels of the results; ``family`` says how a contender is started:

* ``presage``: a ``presage proxy`` process with ``--policy`` (``predicted`` also gets ``--model``)
  and the contender's own flags (``predicted_hedged``: hedging on);
* ``reference``: a ``presage proxy`` with the oracle plugin, reading the testbed's hidden state;
* ``external``: HAProxy or NGINX from the OS packages, configured by ``loadtest.external_lb``.

HAProxy ``leastconn`` and NGINX ``least_conn`` are the classic connection-count balancers; NGINX
``random two least_conn`` is power-of-two-choices on connection counts (Mitzenmacher 2001), the
strongest latency-blind balancer on testbeds like this one.
"""

from __future__ import annotations

from dataclasses import dataclass

ORACLE_POLICY = "loadtest.bench.oracle:OraclePolicy"


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    family: str  # "presage" | "reference" | "external"
    policy: str  # the proxy's --policy, or the external balancer's algorithm line
    server: str = "presage"  # "presage" | "haproxy" | "nginx"
    predictive: bool = False
    label: str = ""
    args: tuple[str, ...] = ()  # extra ``presage proxy`` flags

    @property
    def display(self) -> str:
        return self.label or self.name


CONTENDERS: tuple[Contender, ...] = (
    Contender("round_robin", "presage", "round_robin"),
    Contender("least_request", "presage", "least_request"),
    Contender("peak_ewma", "presage", "peak_ewma"),
    Contender("predicted", "presage", "predicted", predictive=True),
    # the same policy with prediction-driven hedging (proxy/hedge.py): a copy to the runner-up after
    # 2x the predicted RTT, at most 5% of requests; reported beside predicted, never instead of it
    Contender(
        "predicted_hedged",
        "presage",
        "predicted",
        predictive=True,
        label="predicted + hedging",
        args=("--hedge-after", "2", "--hedge-budget-percent", "5"),
    ),
    Contender("oracle", "reference", ORACLE_POLICY, label="oracle (reference)"),
    Contender("haproxy_leastconn", "external", "leastconn", "haproxy", label="HAProxy leastconn"),
    Contender("nginx_least_conn", "external", "least_conn", "nginx", label="NGINX least_conn"),
    Contender(
        "nginx_random_two", "external", "random two least_conn", "nginx", label="NGINX random two least_conn"
    ),
)
BY_NAME = {c.name: c for c in CONTENDERS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def select(names: str | None) -> list[Contender]:
    """Contenders named in a comma list (every one when ``None``), in the table's order."""
    if names is None:
        return list(CONTENDERS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown or not wanted:
        raise ValueError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(NAMES)})"
        )
    return [c for c in CONTENDERS if c.name in wanted]
