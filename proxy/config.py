"""Proxy configuration: one frozen value, loaded from a YAML file, ``PRESAGE_*`` env and CLI flags.

Precedence is CLI > environment > file > default (the contract in ARCHITECTURE.md). Every value is
checked when the config is built, and every error names the dotted key it concerns
(``config: unknown key 'health.intervl_s'``), never silently accepting a typo (hypercorn's
``from_mapping``, starlette's ``config.py``). Nested sections reuse the settings dataclasses of the
parts that own them (health checks, outlier ejection, retry budget), so their own ``__post_init__``
checks apply; a ``ValueError`` they raise is reported under the section's key.

The loader is pure: ``load_config(argv, env)`` reads the file named by ``-c``/``PRESAGE_CONFIG``
and returns a ``ProxyConfig`` or raises ``ConfigError``. A SIGHUP reload calls it again with the
same argv and environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from predictor_runtime.samples import class_value

from .balancer import registry
from .health import HealthCheckSettings
from .hedge import HedgeSettings
from .outlier import OutlierSettings
from .retry_budget import RetrySettings

ENV_PREFIX = "PRESAGE_"
DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_ADMIN = "127.0.0.1:9901"


class ConfigError(ValueError):
    """A configuration problem, naming the dotted key (and the source when it is not the file)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config: {key}: {message}" if key else f"config: {message}")
        self.key = key


def unknown_key(key: str) -> ConfigError:
    err = ConfigError("", f"unknown key {key!r}")
    err.key = key
    return err


# -- value types -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces); port 0 picks a free port."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"port {port} out of range")
        host = host.strip("[]") or "0.0.0.0"
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    id: str
    url: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.id or any(c.isspace() for c in self.id):
            raise ValueError(f"bad backend id {self.id!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s)://HOST[:PORT] URL, got {self.url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"a backend URL is scheme://host:port only, got {self.url!r}")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"weight must be a positive number, got {self.weight!r}")

    @property
    def origin(self) -> str:
        return self.url.rstrip("/")

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        """``[ID=]URL``; without an ID the backend is named ``host:port``."""
        ident, sep, url = text.partition("=")
        if not sep or "://" in ident:
            ident, url = "", text
        url = url.strip()
        if not ident:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            ident = f"{parts.hostname}:{port}" if parts.hostname else url
        return cls(ident.strip(), url)


@dataclass(frozen=True, slots=True)
class ClassFrom:
    """What makes a request heavy or light: ``header:NAME``, ``query:NAME`` or ``path:REGEX``.

    For ``path`` the first capture group is the class when the pattern has one, else the whole
    match. The raw text becomes a model input through ``samples.class_value``.
    """

    kind: str
    name: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, spec: str) -> ClassFrom:
        kind, sep, name = spec.partition(":")
        if not sep or not name or kind not in ("header", "query", "path"):
            raise ValueError(f"expected header:NAME, query:NAME or path:REGEX, got {spec!r}")
        if kind != "path":
            return cls(kind, name)
        try:
            return cls(kind, name, re.compile(name))
        except re.error as exc:
            raise ValueError(f"bad regular expression {name!r}: {exc}") from None

    def raw(self, headers: Mapping[str, str], path: str, query: Mapping[str, str]) -> str | None:
        if self.kind == "header":
            return headers.get(self.name)
        if self.kind == "query":
            return query.get(self.name)
        assert self.pattern is not None
        match = self.pattern.search(path)
        if match is None:
            return None
        return match.group(1) if self.pattern.groups else match.group(0)

    def value(self, headers: Mapping[str, str], path: str, query: Mapping[str, str]) -> float:
        return class_value(self.raw(headers, path, query))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts (aiohttp ``ClientTimeout``): connect, idle read between chunks, total."""

    connect_s: float = 2.0
    read_s: float = 30.0
    total_s: float | None = None  # None: no cap, so long streams are not cut

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "total_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    path: str | None = "-"  # "-": stdout; None: off
    sample: float = 1.0  # share of requests logged; errors are always logged

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise ValueError(f"sample: must be between 0 and 1, got {self.sample!r}")


@dataclass(frozen=True)
class ProxyConfig:
    listen: HostPort = field(default_factory=lambda: HostPort.parse(DEFAULT_LISTEN))
    admin: HostPort = field(default_factory=lambda: HostPort.parse(DEFAULT_ADMIN))
    backends: tuple[BackendSpec, ...] = ()
    policy: str = "peak_ewma"
    redis: str | None = None
    model: str | None = None
    workers: int = 1
    class_from: ClassFrom | None = None
    record: str | None = None
    record_stream: str | None = None  # Redis stream key for samples, e.g. presage:samples
    record_fraction: float = 1.0  # share of requests recorded
    explore: float = 0.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_body_bytes: int = 1 << 30
    max_connections_per_backend: int = 1024
    health: HealthCheckSettings = field(default_factory=HealthCheckSettings)
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    panic_threshold_percent: float = 50.0
    retry: RetrySettings = field(default_factory=RetrySettings)
    hedge: HedgeSettings = field(default_factory=HedgeSettings)
    ewma_decay_s: float = 10.0
    trusted_hops: int = 0
    forwarded_header: bool = False
    access_log: AccessLogSettings = field(default_factory=AccessLogSettings)
    drain_delay_s: float = 2.0
    grace_s: float = 30.0
    explain_header: bool = False
    shadow: str | None = None
    predicted: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    source: str | None = None  # the file it was read from, for logs


# -- building a config from a raw mapping ----------------------------------------------------------

SECTIONS: dict[str, type] = {
    "timeouts": Timeouts,
    "health": HealthCheckSettings,
    "outlier": OutlierSettings,
    "retry": RetrySettings,
    "hedge": HedgeSettings,
    "access_log": AccessLogSettings,
}


def build_config(raw: Mapping[str, Any], *, source: str | None = None) -> ProxyConfig:
    """Validate a merged raw mapping (file + env + CLI) into a ``ProxyConfig``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"the top level must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(ProxyConfig)} - {"source"}
    for key in raw:
        if key not in known:
            raise unknown_key(str(key))
    values: dict[str, Any] = {"source": source}
    for key, value in raw.items():
        values[key] = _build_value(key, value)
    if not values.get("backends"):
        raise ConfigError("backends", "at least one backend is required (--backend [ID=]URL)")
    config = ProxyConfig(**values)
    _check_policies(config)
    return config


def _build_value(key: str, value: Any) -> Any:
    if key in SECTIONS:
        return build_section(SECTIONS[key], value, key)
    builder = _TOP_LEVEL.get(key)
    if builder is None:
        return _coerce(value, _hint(ProxyConfig, key), key)
    try:
        return builder(value)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from None


def build_section(cls: type, raw: Any, key: str) -> Any:
    """Build a settings dataclass from a mapping, checking key names and value types."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in names:
            raise unknown_key(f"{key}.{name}")
        kwargs[name] = _coerce(value, _hint(cls, name), f"{key}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(_blame(key, str(exc), names), str(exc)) from None


def _blame(section: str, message: str, names: set[str]) -> str:
    """The dotted key a section's own check complained about, when its message names one."""
    for name in sorted(names, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", message):
            return f"{section}.{name}"
    return section


def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check a YAML scalar against a field's annotation; ints are accepted for floats."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    ok: bool
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        return value
    if not ok:
        raise ConfigError(key, f"expected {hint.__name__}, got {value!r}")
    return value


def _backends(value: Any) -> tuple[BackendSpec, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of {{id, url, weight}}, got {type(value).__name__}")
    specs: list[BackendSpec] = []
    for i, item in enumerate(value):
        key = f"backends[{i}]"
        if isinstance(item, BackendSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(_wrap(key, BackendSpec.parse, item))
        elif isinstance(item, Mapping):
            specs.append(_backend_from_mapping(item, key))
        else:
            raise ConfigError(key, f"expected {{id, url, weight}} or '[ID=]URL', got {item!r}")
    ids = [s.id for s in specs]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise ValueError(f"duplicate backend id {duplicate!r}")
    return tuple(specs)


def _backend_from_mapping(item: Mapping[str, Any], key: str) -> BackendSpec:
    for name in item:
        if name not in ("id", "url", "weight"):
            raise unknown_key(f"{key}.{name}")
    if "url" not in item:
        raise ConfigError(f"{key}.url", "missing")
    url = _coerce(item["url"], str, f"{key}.url")
    weight = _coerce(item.get("weight", 1.0), float, f"{key}.weight")
    if "id" in item:
        return _wrap(key, BackendSpec, str(item["id"]), url, weight)
    spec = _wrap(key, BackendSpec.parse, url)
    return _wrap(key, BackendSpec, spec.id, spec.url, weight)


def _wrap(key: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _policy(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a policy name, got {value!r}")
    return value


def _optional_policy(value: Any) -> str | None:
    return None if value is None else _policy(value)


def _check_policies(config: ProxyConfig) -> None:
    if config.predicted and "predicted" in (config.policy, config.shadow):
        from .balancer.predicted import PredictedSettings

        try:
            PredictedSettings.from_mapping(dict(config.predicted))
        except (TypeError, ValueError) as exc:
            raise ConfigError("predicted", str(exc)) from None
    names = tuple(registry.POLICY_NAMES)
    for key in ("policy", "shadow"):
        value = getattr(config, key)
        if value is None or value in names:
            continue
        if ":" in value:  # a "module:Class" plugin: import it now so a typo fails at start-up
            try:
                registry.policy_class(value)
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
            continue
        raise ConfigError(key, f"unknown policy {value!r} (known: {', '.join(names)}, or module:Class)")
    if config.hedge.enabled and config.policy != "predicted":
        # the deadline and the second backend come from the model's decision
        raise ConfigError("hedge.after", f"hedging needs --policy predicted (the policy is {config.policy})")


def _host_port(value: Any) -> HostPort:
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return HostPort.parse(value)


def _class_from(value: Any) -> ClassFrom | None:
    if value is None or isinstance(value, ClassFrom):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected header:NAME, query:NAME or path:REGEX, got {value!r}")
    return ClassFrom.parse(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return value


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
        above = value > low if low_open else value >= low
        if not (above and value <= high):
            bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
            raise ValueError(f"must be in {bound}, got {value!r}")
        return value

    return check


def _optional_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"expected a string, got {value!r}")


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping, got {type(value).__name__}")
    return types.MappingProxyType(dict(value))


_TOP_LEVEL: dict[str, Callable[[Any], Any]] = {
    "listen": _host_port,
    "admin": _host_port,
    "backends": _backends,
    "policy": _policy,
    "shadow": _optional_policy,
    "redis": _optional_str,
    "model": _optional_str,
    "record": _optional_str,
    "record_stream": _optional_str,
    "record_fraction": _number(0.0, 1.0),
    "workers": _positive_int,
    "class_from": _class_from,
    "explore": _number(0.0, 1.0),
    "max_body_bytes": _positive_int,
    "max_connections_per_backend": _positive_int,
    "panic_threshold_percent": _number(0.0, 100.0),
    "ewma_decay_s": _number(0.0, math.inf, low_open=True),
    "trusted_hops": _non_negative_int,
    "drain_delay_s": _number(0.0, 3600.0),
    "grace_s": _number(0.0, 3600.0),
    "predicted": _mapping,
}


# -- flags and environment -------------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _parse_optional(text: str) -> str | None:
    return None if text.strip().lower() in ("", "null", "none", "off") else text


def _parse_backends(text: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", text) if item]


@dataclass(frozen=True, slots=True)
class Flag:
    """One CLI flag, its ``PRESAGE_<FLAG>`` variable and the dotted config key it sets."""

    flag: str
    key: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = "VALUE"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


FLAGS: tuple[Flag, ...] = (
    Flag("--listen", "listen", str, f"data-plane address (default {DEFAULT_LISTEN})", "HOST:PORT"),
    Flag("--admin", "admin", str, f"admin address (default {DEFAULT_ADMIN})", "HOST:PORT"),
    Flag("--backend", "backends", str, "a backend, repeatable (env: comma-separated)", "[ID=]URL"),
    Flag("--policy", "policy", str, "balancing policy (default peak_ewma)", "NAME"),
    Flag("--redis", "redis", _parse_optional, "Redis URL for feature vectors and samples", "URL"),
    Flag("--model", "model", _parse_optional, "model bundle directory", "PATH"),
    Flag("--workers", "workers", int, "worker processes sharing the port (SO_REUSEPORT)", "N"),
    Flag("--class-from", "class_from", _parse_optional, "header:NAME | query:NAME | path:REGEX", "SPEC"),
    Flag("--record", "record", _parse_optional, "write training samples to FILE", "FILE"),
    Flag("--record-stream", "record_stream", _parse_optional, "write samples to this Redis stream", "KEY"),
    Flag("--record-fraction", "record_fraction", float, "share of requests recorded (default 1)", "F"),
    Flag("--explore", "explore", float, "share of requests routed at random", "EPS"),
    Flag("--shadow", "shadow", _parse_optional, "policy evaluated beside the live one", "NAME"),
    Flag("--predicted-choices", "predicted.choices", int, "predicted: candidates scored (0: all)", "D"),
    Flag("--hedge-after", "hedge.after", float, "hedge idempotent requests after X x predicted RTT", "X"),
    Flag("--hedge-budget-percent", "hedge.budget_percent", float, "hedged copies per 100 requests", "PCT"),
    Flag("--access-log", "access_log.path", _parse_optional, "'-' stdout, a file, or 'off'", "PATH"),
    Flag("--access-log-sample", "access_log.sample", float, "share of requests logged", "FRACTION"),
    Flag("--max-body-bytes", "max_body_bytes", int, "largest request body accepted", "BYTES"),
    Flag("--trusted-hops", "trusted_hops", int, "proxies in front whose X-Forwarded-* are kept", "N"),
    Flag("--forwarded-header", "forwarded_header", _parse_bool, "also set Forwarded (RFC 7239)", "BOOL"),
    Flag("--explain-header", "explain_header", _parse_bool, "add x-presage-backend/-policy", "BOOL"),
    Flag("--drain-delay-s", "drain_delay_s", float, "SIGTERM: seconds of readyz 503 first", "S"),
    Flag("--grace-s", "grace_s", float, "SIGTERM: seconds to finish in-flight requests", "S"),
    Flag("--ewma-decay-s", "ewma_decay_s", float, "peak-EWMA decay time", "S"),
    Flag("--panic-threshold-percent", "panic_threshold_percent", float, "route to all below", "PCT"),
)


def make_parser(prog: str = "presage proxy") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the Presage proxy. Every flag also reads PRESAGE_<FLAG>; "
        "precedence: flag > environment > file > default.",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="YAML config file (env PRESAGE_CONFIG)")
    for flag in FLAGS:
        action = "append" if flag.key == "backends" else "store"
        parser.add_argument(flag.flag, dest=flag.dest, action=action, metavar=flag.metavar, help=flag.help)
    return parser


def load_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> ProxyConfig:
    """Parse argv (``argparse`` exits 2 on a bad flag) and build the merged config."""
    env = os.environ if env is None else env
    args = make_parser().parse_args(list(argv))
    path = args.config or env.get(ENV_PREFIX + "CONFIG") or None
    raw = read_file(path) if path else {}
    for flag in FLAGS:
        text = env.get(flag.env)
        if text is not None:
            _set(raw, flag.key, _from_text(flag, text, flag.env))
    for flag in FLAGS:
        given = getattr(args, flag.dest)
        if given is None:
            continue
        if flag.key == "backends":
            _set(raw, flag.key, [item for text in given for item in _parse_backends(text)])
        else:
            _set(raw, flag.key, _from_text(flag, given, flag.flag))
    return build_config(raw, source=path)


def _from_text(flag: Flag, text: str, origin: str) -> Any:
    if flag.key == "backends":
        return _parse_backends(text)
    try:
        return flag.parse(text)
    except ValueError as exc:
        raise ConfigError(flag.key, f"{exc} (from {origin})") from None


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    head, _, tail = dotted.partition(".")
    if not tail:
        raw[head] = value
        return
    section = raw.get(head)
    if not isinstance(section, dict):
        section = {} if section is None else section
        if not isinstance(section, dict):
            raise ConfigError(head, f"expected a mapping, got {type(section).__name__}")
        raw[head] = section
    section[tail] = value


def read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data
