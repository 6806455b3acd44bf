"""``presage proxy``: load and check the config, then run one worker or supervise N of them.

A configuration error prints one line naming the key (``config: unknown key 'health.intervl_s'``)
and exits 2 without a traceback; a bad flag is reported by argparse, also with exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from .config import ConfigError, ProxyConfig, load_config

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"presage proxy: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1:
        from .workers import Supervisor

        return Supervisor(config, args).run()
    from .app import run_worker

    def reload() -> ProxyConfig:
        return load_config(args)

    return run_worker(config, reload)


if __name__ == "__main__":
    sys.exit(main())
