"""Config: file + PRESAGE_* env + flags, precedence, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, HostPort, build_config, load_config

B = "http://127.0.0.1:9001"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "presage.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_and_the_contract_keys(tmp_path: Path) -> None:
    config = load_config(["--backend", B], env={})
    assert config.listen == HostPort("0.0.0.0", 8080)
    assert config.admin == HostPort("127.0.0.1", 9901)
    assert config.policy == "peak_ewma" and config.workers == 1
    assert config.backends[0].id == "127.0.0.1:9001" and config.backends[0].weight == 1.0
    assert config.redis is None and config.model is None and config.record is None and config.shadow is None
    assert config.explore == 0.0 and dict(config.predicted) == {}


def test_precedence_is_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    path = write(
        tmp_path, f"listen: 127.0.0.1:7000\npolicy: random\nworkers: 3\nbackends: [{{id: a, url: '{B}'}}]\n"
    )
    env = {"PRESAGE_POLICY": "least_request", "PRESAGE_WORKERS": "2"}
    config = load_config(["-c", path, "--workers", "4"], env=env)
    assert config.workers == 4  # flag
    assert config.policy == "least_request"  # env over file
    assert config.listen == HostPort("127.0.0.1", 7000)  # file over default
    assert config.admin == HostPort("127.0.0.1", 9901)  # default
    assert [b.id for b in config.backends] == ["a"]
    assert config.source == path


def test_backends_from_flags_and_env() -> None:
    config = load_config(["--backend", "api=http://127.0.0.1:1", "--backend", "http://localhost:2"], env={})
    assert [(b.id, b.url) for b in config.backends] == [
        ("api", "http://127.0.0.1:1"),
        ("localhost:2", "http://localhost:2"),
    ]
    env = {"PRESAGE_BACKEND": "a=http://127.0.0.1:1, b=http://127.0.0.1:2"}
    assert [b.id for b in load_config([], env=env).backends] == ["a", "b"]
    env_and_flag = load_config(["--backend", "c=http://127.0.0.1:3"], env=env)
    assert [b.id for b in env_and_flag.backends] == ["c"]  # flags replace, never merge


def test_nested_sections_and_later_parts_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
backends:
  - {{id: a, url: "{B}", weight: 2}}
timeouts: {{connect_s: 0.5, read_s: 3, total_s: 60}}
health: {{path: /ready, interval_s: 1, unhealthy_threshold: 3}}
outlier: {{consecutive_failures: 3}}
retry: {{attempts: 3, budget_percent: 10}}
access_log: {{path: null, sample: 0.1}}
max_body_bytes: 1048576
trusted_hops: 1
forwarded_header: true
class_from: "header:X-Size"
redis: redis://127.0.0.1:6379/0
model: /models/current
record: samples.jsonl
explore: 0.05
shadow: peak_ewma
explain_header: true
predicted: {{choices: 3, min_accuracy: 0.8}}
""",
    )
    config = load_config(["-c", path], env={})
    assert config.backends[0].weight == 2.0
    assert (config.timeouts.connect_s, config.timeouts.read_s, config.timeouts.total_s) == (0.5, 3.0, 60.0)
    assert config.health.path == "/ready" and config.health.unhealthy_threshold == 3
    assert config.outlier.consecutive_failures == 3 and config.retry.attempts == 3
    assert config.access_log.path is None and config.access_log.sample == 0.1
    assert config.class_from is not None and config.class_from.kind == "header"
    assert (config.redis, config.model, config.record, config.explore) == (
        "redis://127.0.0.1:6379/0",
        "/models/current",
        "samples.jsonl",
        0.05,
    )
    assert config.shadow == "peak_ewma" and config.explain_header is True
    assert dict(config.predicted) == {"choices": 3, "min_accuracy": 0.8}


BAD = [
    ({"health": {"intervl_s": 1}}, "config: unknown key 'health.intervl_s'"),
    ({"listn": "x"}, "config: unknown key 'listn'"),
    ({"health": {"interval_s": 0}}, "config: health.interval_s: interval_s: must be > 0"),
    ({"health": {"interval_s": "often"}}, "config: health.interval_s: expected float"),
    ({"timeouts": {"read_s": -1}}, "config: timeouts.read_s"),
    ({"workers": 0}, "config: workers: expected an integer >= 1"),
    ({"policy": "fastest"}, "config: policy: unknown policy 'fastest'"),
    ({"shadow": "fastest"}, "config: shadow: unknown policy 'fastest'"),
    ({"explore": 2}, "config: explore: must be in [0.0, 1.0]"),
    ({"listen": "nowhere"}, "config: listen: expected HOST:PORT"),
    ({"class_from": "path:(["}, "config: class_from: bad regular expression"),
    ({"class_from": "cookie:x"}, "config: class_from: expected header:NAME"),
    ({"backends": [{"id": "a"}]}, "config: backends[0].url: missing"),
    ({"backends": [{"id": "a", "url": B, "wieght": 1}]}, "config: unknown key 'backends[0].wieght'"),
    ({"backends": [{"id": "a", "url": "ftp://x"}]}, "config: backends[0]: expected an http(s)://"),
    (
        {"backends": [{"id": "a", "url": B}, {"id": "a", "url": B}]},
        "config: backends: duplicate backend id 'a'",
    ),
    ({"retry": {"attempts": 0}}, "config: retry.attempts"),
    ({"predicted": [1]}, "config: predicted: expected a mapping"),
    ({"policy": "no_such_module:Policy"}, "config: policy: policy: 'no_such_module:Policy' is unavailable"),
]


@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_values_name_the_key(override: dict[str, object], message: str) -> None:
    raw: dict[str, object] = {"backends": [{"id": "a", "url": B}]}
    raw.update(override)
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert str(info.value).startswith(message), str(info.value)


def test_no_backends_names_backends() -> None:
    with pytest.raises(ConfigError, match="config: backends: at least one backend"):
        load_config([], env={})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"config: workers: .* \(from PRESAGE_WORKERS\)"):
        load_config(["--backend", B], env={"PRESAGE_WORKERS": "many"})


def test_bad_yaml_and_missing_file_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(["-c", write(tmp_path, "listen: [unclosed\n")], env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(["-c", str(tmp_path / "missing.yaml")], env={})


def test_presage_proxy_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, f"backends: [{{id: a, url: '{B}'}}]\nhealth: {{intervl_s: 1}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "proxy", "-c", path], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "presage proxy: config: unknown key 'health.intervl_s'"
    empty = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "proxy"], capture_output=True, text=True, timeout=60
    )
    assert empty.returncode == 2 and "backends" in empty.stderr and "Traceback" not in empty.stderr


def test_a_module_class_policy_is_a_plugin() -> None:
    config = build_config(
        {"backends": [{"id": "a", "url": B}], "policy": "proxy.balancer.least_request:LeastRequestPolicy"}
    )
    assert config.policy == "proxy.balancer.least_request:LeastRequestPolicy"


def test_predicted_choices_from_flag_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "predicted: {choices: 3, min_accuracy: 0.8}\n")
    argv = ["-c", path, "--backend", B, "--policy", "predicted", "--predicted-choices", "0"]
    flag = load_config(argv, env={})
    assert dict(flag.predicted) == {"choices": 0, "min_accuracy": 0.8}  # the flag wins, the file's rest stays
    env = load_config(["--backend", B, "--policy", "predicted"], env={"PRESAGE_PREDICTED_CHOICES": "2"})
    assert dict(env.predicted) == {"choices": 2}
    with pytest.raises(ConfigError, match="predicted"):
        load_config(["--backend", B, "--policy", "predicted", "--predicted-choices", "-3"], env={})


def test_hedging_is_off_by_default_and_needs_the_predicted_policy() -> None:
    assert load_config(["--backend", B], env={}).hedge.enabled is False
    on = load_config(
        ["--backend", B, "--policy", "predicted", "--hedge-after", "2", "--hedge-budget-percent", "3"], env={}
    )
    assert on.hedge.enabled and on.hedge.after == 2.0 and on.hedge.budget_percent == 3.0
    assert on.hedge.delay_s(0.010) == pytest.approx(0.020) and on.hedge.delay_s(1e-4) == on.hedge.min_delay_s
    with pytest.raises(ConfigError, match=r"hedge\.after: hedging needs --policy predicted"):
        load_config(["--backend", B, "--hedge-after", "2"], env={})
    with pytest.raises(ConfigError, match="hedge"):
        load_config(["--backend", B, "--policy", "predicted", "--hedge-after", "0.5"], env={})
    with pytest.raises(ConfigError, match="hedge"):
        load_config(
            ["--backend", B, "--policy", "predicted", "--hedge-after", "2", "--hedge-budget-percent", "0"],
            env={},
        )
