"""The oracle balancer picks by expected completion time from a constructed hidden state: capacity,
queue, request size, and a noisy-neighbour episode that takes a backend's capacity away for a while.
Time is passed in (``wall_offset_s=0``: ``now`` is wall time)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from loadtest.bench.hidden_state import HiddenStateError, load_hidden_state, parse_hidden_state
from loadtest.bench.oracle import RELOAD_CHECK_S, STATE_ENV, OraclePolicy
from proxy.balancer.base import RequestInfo
from proxy.balancer.endpoint import Endpoint
from proxy.balancer.registry import make_policy

T0 = 1_700_000_000.0
RNG = random.Random(1)


def state_json(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "backends": {
            "fast": {"workers": 4, "cpu_quota_cores": None, "work_mult": 1.0},
            "slow": {"workers": 4, "cpu_quota_cores": 1.0, "work_mult": 2.0},
        },
        # the fast backend's neighbour takes 90 % of it between T0+10 and T0+20
        "episodes": [
            {"backend": "fast", "start_wall": T0 + 10, "end_wall": T0 + 20, "kind": "cpu",
             "workers": 4, "capacity_factor": 0.1},
        ],
        "size_work_s": {"64": 0.001, "256": 0.01, "1024": 0.1},
    }  # fmt: skip
    raw.update(overrides)
    return raw


def endpoints(in_flight: dict[str, int]) -> list[Endpoint]:
    out = []
    for i, (id_, n) in enumerate(in_flight.items()):
        ep = Endpoint(id_, f"http://127.0.0.1:{9000 + i}")
        ep.in_flight = n
        out.append(ep)
    return out


def oracle(**overrides: object) -> OraclePolicy:
    return OraclePolicy(parse_hidden_state(state_json(**overrides)), wall_offset_s=0.0)


def pick(policy: OraclePolicy, in_flight: dict[str, int], size: float, now: float) -> str:
    chosen = policy.pick(endpoints(in_flight), RequestInfo(req_class=size), RNG, now)
    assert chosen is not None
    return chosen.id


def test_prefers_the_backend_with_capacity_when_both_idle() -> None:
    assert pick(oracle(), {"slow": 0, "fast": 0}, 256, T0) == "fast"


def test_an_interference_episode_moves_traffic_away_and_back() -> None:
    policy = oracle()
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 9.9) == "fast"
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 10.0) == "slow"
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 19.9) == "slow"
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 20.0) == "fast"


def test_a_queue_at_the_fast_backend_sends_the_request_to_the_idle_slow_one() -> None:
    # fast: 7 in flight on 4 workers -> 4 queued ahead at the mean work (~37 ms) over 4 workers
    assert pick(oracle(), {"fast": 7, "slow": 0}, 256, T0) == "slow"
    assert pick(oracle(), {"fast": 3, "slow": 0}, 256, T0) == "fast"


def test_the_request_size_changes_the_choice() -> None:
    # slow backend idle (1 worker-core share, x2 work); fast backend with a short queue.
    policy = oracle()
    expected = {
        size: {b: policy.expected_completion_s(b, n, policy.state.work_s(size), T0) for b, n in
               (("fast", 4), ("slow", 0))}
        for size in (64, 1024)
    }  # fmt: skip
    # small request: the queue ahead at fast dominates -> slow; large: its own service dominates -> fast
    assert expected[64]["slow"] < expected[64]["fast"]
    assert expected[1024]["fast"] < expected[1024]["slow"]
    assert pick(policy, {"fast": 4, "slow": 0}, 64, T0) == "slow"
    assert pick(policy, {"fast": 4, "slow": 0}, 1024, T0) == "fast"


def test_quota_is_shared_between_busy_workers() -> None:
    policy = oracle()
    work = policy.state.work_s(256)
    # quota 1 core over 4 workers: each of 4 busy workers gets a quarter core
    assert policy.expected_completion_s("slow", 0, work, T0) == pytest.approx(0.01 * 2.0)
    assert policy.expected_completion_s("slow", 3, work, T0) == pytest.approx(0.01 * 2.0 * 4)


def test_unknown_size_interpolates_and_unknown_backend_is_never_preferred() -> None:
    policy = oracle()
    assert 0.001 < policy.state.work_s(128) < 0.01
    assert pick(policy, {"ghost": 0, "slow": 50}, 256, T0) == "slow"


def test_network_delay_episode_counts_without_slowing_the_cpu() -> None:
    policy = oracle(episodes=[{"backend": "fast", "start_wall": T0, "end_wall": T0 + 5, "kind": "delay",
                               "workers": 0, "delay_ms": 200}])  # fmt: skip
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 1) == "slow"
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 6) == "fast"


def test_a_cpu_hog_competes_for_the_cores_as_cfs_shares_them() -> None:
    # 4 stress threads beside 1 busy request thread on 4 cores: 4/5 of a core each
    state = parse_hidden_state(state_json(episodes=[
        {"backend": "fast", "start_wall": T0, "end_wall": T0 + 5, "kind": "cpu", "workers": 4}]))  # fmt: skip
    assert state.episodes[0].competing == 4.0
    assert state.episodes[0].penalty == 1.0
    policy = OraclePolicy(state, wall_offset_s=0.0)
    assert policy.expected_completion_s("fast", 0, 0.01, T0 + 1) == pytest.approx(0.01 / 0.8)
    assert policy.expected_completion_s("fast", 0, 0.01, T0 + 6) == pytest.approx(0.01)


def test_a_neighbour_in_a_quota_group_adds_the_cfs_throttling_wait() -> None:
    # 0.5-core quota, one always-runnable hog thread: the group runs half of each period, so a
    # request arriving at a random phase waits (1 - 0.5)^2 * P / 2 on average before it runs
    raw = state_json(
        backends={"b1": {"workers": 2, "cpu_quota_cores": 0.5}},
        episodes=[{"backend": "b1", "start_wall": T0, "end_wall": T0 + 5, "kind": "cpu", "workers": 1}],
    )
    policy = OraclePolicy(parse_hidden_state(raw), wall_offset_s=0.0, host_cpus=2)
    fluid = 0.001 * 2 / 0.5  # one request thread and the hog share 0.5 core
    assert policy.expected_completion_s("b1", 0, 0.001, T0 + 1) == pytest.approx(fluid + 0.25 * 0.1 / 2)
    assert policy.expected_completion_s("b1", 0, 0.001, T0 + 6) == pytest.approx(0.001 / 0.5)
    # a scenario with a 10-ms period: the same share of each period, a tenth of the wait
    short = OraclePolicy(parse_hidden_state({**raw, "cpu_period_s": 0.01}), wall_offset_s=0.0, host_cpus=2)
    assert short.expected_completion_s("b1", 0, 0.001, T0 + 1) == pytest.approx(fluid + 0.25 * 0.01 / 2)


def test_reads_the_testbed_format() -> None:
    """The shape ``Testbed.hidden_state()`` writes: a backend list with the effective cores."""
    raw = {
        "scenario": "quick", "t0_wall": T0,
        "backends": [
            {"id": "b1", "workers": 4, "cpu_quota_cores": None, "work_mult": 1.0, "delay_ms": 0.0,
             "cpus": [0], "cores": 1.0, "capacity_rps": 90.0},
            {"id": "b2", "workers": 2, "cpu_quota_cores": 0.6, "work_mult": 1.5, "delay_ms": 5.0,
             "cpus": [], "cores": 0.6, "capacity_rps": 40.0},
        ],
        "episodes": [
            {"backend": "b1", "kind": "cache", "workers": 2, "start_wall": T0 + 5, "end_wall": T0 + 17}
        ],
        "size_work_s": {"128": 0.002, "256": 0.008, "512": 0.035},
        "size_shares": {"128": 0.55, "256": 0.35, "512": 0.10},
    }  # fmt: skip
    state = parse_hidden_state(raw)
    assert state.backends["b1"].cores == 1.0
    assert state.backends["b2"].delay_s == pytest.approx(0.005)
    assert state.episodes[0].competing == 2.0
    assert state.episodes[0].penalty < 1.0
    assert state.mean_work_s() == pytest.approx(0.55 * 0.002 + 0.35 * 0.008 + 0.10 * 0.035)
    policy = OraclePolicy(state, wall_offset_s=0.0)
    assert pick(policy, {"b1": 0, "b2": 0}, 256, T0) == "b1"
    assert pick(policy, {"b1": 0, "b2": 0}, 256, T0 + 6) == "b2"


def test_loaded_as_a_proxy_plugin_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hidden.json"
    path.write_text(json.dumps(state_json()))
    monkeypatch.setenv(STATE_ENV, str(path))
    policy = make_policy("loadtest.bench.oracle:OraclePolicy")
    assert policy.name == "oracle"
    assert isinstance(policy, OraclePolicy)
    policy.wall_offset_s = 0.0
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 12) == "slow"


def test_rereads_the_file_when_the_harness_rewrites_it(tmp_path: Path) -> None:
    path = tmp_path / "hidden.json"
    path.write_text(json.dumps(state_json(episodes=[])))
    policy = OraclePolicy(path=str(path), wall_offset_s=0.0)
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 12) == "fast"
    path.write_text(json.dumps(state_json()))
    os.utime(path, (T0, T0))  # a different mtime, whatever the file system's resolution
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 12 + RELOAD_CHECK_S / 2) == "fast"  # not yet
    assert pick(policy, {"fast": 0, "slow": 0}, 256, T0 + 12 + RELOAD_CHECK_S) == "slow"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "missing key 'backends'"),
        (state_json(size_work_s={}), "size_work_s"),
        (state_json(size_work_s={"x": 1}), "size_work_s key"),
        (state_json(backends={"a": {"workers": 0}}), "a.workers"),
        (state_json(episodes=[{"backend": "nope", "start_wall": 1, "end_wall": 2}]), "unknown backend"),
        (state_json(episodes=[{"backend": "fast", "start_wall": 2, "end_wall": 1}]), "before start_wall"),
        (
            state_json(episodes=[{"backend": "fast", "start_wall": 1, "end_wall": 2, "capacity_factor": 2}]),
            "capacity_factor",
        ),
    ],
)
def test_bad_hidden_state_names_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(HiddenStateError, match=message):
        parse_hidden_state(raw)


def test_missing_file_and_missing_env_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HiddenStateError, match="cannot read"):
        load_hidden_state(tmp_path / "absent.json")
    monkeypatch.delenv(STATE_ENV, raising=False)
    with pytest.raises(HiddenStateError, match=STATE_ENV):
        OraclePolicy()
