"""Entry point of ``modelrollout`` and ``kubectl-modelrollout``.

Each group of commands lives in its own module with an ``add_parsers``
function, so adding a command is adding a module to ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = [
    "modelrollout.cli.run",
    "modelrollout.cli.commands",
    "modelrollout.cli.analyze",
    "modelrollout.cli.dashboard",
]

#: What ``modelrollout dev ...`` says: the local environment is a separate tool now.
DEV_MOVED = (
    "`modelrollout dev` is no longer part of the product CLI: the local environment is "
    "the developer tool `modelrollout-dev` (same subcommands: `modelrollout-dev up`, "
    "`modelrollout-dev demo`), installed from the clone by `make install` "
    "(`pip install -e devenv`); `make up` and `make demo` run it."
)


def _dev_moved(args: argparse.Namespace) -> int:
    print(f"error: {DEV_MOVED}", file=sys.stderr)
    return 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Progressive delivery of ML models on Kubernetes: shadow, canary, "
        "blue-green, judged on latency, errors, drift and agreement.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command group not present in this build
            raise
        module.add_parsers(sub)
    # Not listed in --help (no help=): only there to point old muscle memory at the new tool.
    moved = sub.add_parser("dev", add_help=False)
    moved.add_argument("rest", nargs=argparse.REMAINDER)
    moved.set_defaults(func=_dev_moved)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prog = "kubectl modelrollout" if sys.argv[0].endswith("kubectl-modelrollout") else None
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
