"""The `presage` console script: one subcommand per part, each imported only when it runs.

Lazy dispatch keeps `presage agent` light (it never imports aiohttp or onnxruntime) and lets the
evaluation entry points live in `loadtest/` without the proxy importing that package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> ("module:function", one-line help). Each function takes argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "proxy": ("proxy.main:main", "run the proxy"),
    "agent": ("metrics_agent.cli:main", "run a metrics agent beside one backend"),
    "train": ("predictor_runtime.train.cli:main", "build, assess and export a model bundle"),
    "demo": ("loadtest.demo:main", "the whole system on one machine, ending in a comparison table"),
    "bench": ("loadtest.bench.cli:main", "the testbed policy shoot-out"),
    "simulate": ("loadtest.sim.cli:main", "the discrete-event simulator"),
    "backend": ("loadtest.testbed.backend:main", "run one testbed backend (real numpy work)"),
}


def _usage() -> str:
    lines = ["usage: presage COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from proxy import __version__

        print(f"presage {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"presage: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = entry[0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
