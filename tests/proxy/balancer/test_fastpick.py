"""The C table path (``proxy/balancer/_fastpick.c``) answers exactly as its Python reference.

``table_preds`` and ``two_lowest`` in ``proxy.balancer.predicted`` are the reference; the
extension is built by ``pip install -e .`` (a C compiler and Python's headers), and this suite
requires it, so that a build that silently fell back to Python is noticed here, not in a
benchmark."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.balancer import _fastpick, predicted
from proxy.balancer.endpoint import Endpoint

NAN = math.nan


def test_the_policy_uses_the_extension() -> None:
    assert predicted.FAST_PATH
    assert predicted._table_preds is _fastpick.tabulated and predicted._two_lowest is _fastpick.two_lowest


def endpoints(flights: list[int], ids: list[str] | None = None) -> list[Endpoint]:
    eps = []
    for i, n in enumerate(flights):
        ep = Endpoint(ids[i] if ids else f"b{i}", f"http://127.0.0.1:{9000 + i}")
        ep.in_flight = n
        eps.append(ep)
    return eps


cost = st.one_of(st.integers(0, 4).map(float), st.just(NAN), st.floats(0.0, 1.0))


@given(st.lists(st.tuples(cost, st.integers(0, 3)), min_size=2, max_size=9))
def test_two_lowest_matches_the_python_reference(pairs: list[tuple[float, int]]) -> None:
    costs = [c for c, _ in pairs]
    eps = endpoints([n for _, n in pairs])
    assert _fastpick.two_lowest(costs, eps) == predicted.two_lowest(costs, eps)


@given(st.data())
def test_tabulated_matches_the_python_reference(data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, 6))
    levels = data.draw(st.integers(1, 4))
    # a row: None (nothing scored) or its cells, some NaN (not scored yet)
    cell = st.one_of(st.floats(0.001, 1.0), st.just(NAN))
    table = data.draw(st.lists(st.one_of(st.none(), st.lists(cell, min_size=levels, max_size=levels)),
                               min_size=rows, max_size=rows))  # fmt: skip
    wall = 1000.0
    deadlines = st.sampled_from([wall - 1.0, wall, wall + 1.0, NAN])  # stale, just fresh, fresh, never seen
    fresh = data.draw(st.lists(deadlines, min_size=rows, max_size=rows))
    known = [f"b{i}" for i in range(rows)]
    row_of = {bid: i for i, bid in enumerate(known)}
    n = data.draw(st.integers(1, 5))
    ids = data.draw(st.lists(st.sampled_from([*known, "stranger"]), min_size=n, max_size=n))
    flights = data.draw(st.lists(st.integers(0, levels + 1), min_size=n, max_size=n))
    eps = endpoints(flights, ids)
    reads = data.draw(st.booleans())
    want = predicted.table_preds(eps, row_of, fresh, table, wall, reads)
    got = _fastpick.tabulated(eps, row_of, fresh, table, wall, reads)
    assert got == want  # the same Python floats (NaN never reaches an answer)


def test_tabulated_answers_from_the_cells_it_finds() -> None:
    eps = endpoints([2, 0])
    table = [[0.1, 0.2, 0.3], [0.5, NAN, NAN]]
    got = _fastpick.tabulated(eps, {"b0": 0, "b1": 1}, [1e9, 1e9], table, 1.0, True)
    assert got == [0.3, 0.5] and got[0] is table[0][2]
    assert _fastpick.tabulated(eps, {"b0": 0, "b1": 1}, [1e9, 1e9], table, 1.0, False) == [0.1, 0.5]


def test_bad_arguments_raise_rather_than_crash() -> None:
    eps = endpoints([0, 0])
    with pytest.raises(TypeError):
        _fastpick.tabulated(eps, {"b0": 0}, (1.0,), [[0.1]], 1.0, True)  # a tuple for fresh_until
    with pytest.raises(TypeError):
        _fastpick.tabulated(eps, {"b0": 0})
    with pytest.raises(ValueError):
        _fastpick.two_lowest([1.0], eps)
    with pytest.raises(TypeError):
        _fastpick.two_lowest([1.0, "x"], eps)
    weird = endpoints([0, 0])
    with pytest.raises(AttributeError):
        _fastpick.two_lowest([1.0, 1.0], [weird[0], object()])  # a tie reads in_flight


def test_random_decisions_agree_over_many_states() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(2, 8)
        eps = endpoints([rng.randint(0, 3) for _ in range(n)])
        costs = [rng.choice([0.1, 0.2, 0.3, NAN]) for _ in range(n)]
        assert _fastpick.two_lowest(costs, eps) == predicted.two_lowest(costs, eps)
