"""The ``fedopt`` console script.

Each subcommand lives in its own module ``fedopt.cli.<name>`` with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; modules are imported lazily so
``fedopt solve`` never pays for torch or Flower. Every :class:`fedopt.errors.FedoptError`
becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FedoptError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "channel": ("fedopt.cli.channel", "check the success probability (15) against Monte Carlo"),
    "solve": ("fedopt.cli.solve", "solve a canonical bandwidth (16) or power (21) instance"),
    "validate": ("fedopt.cli.validate", "compare every method on random instances"),
    "simulate": ("fedopt.cli.simulate", "run switching-based federated fine-tuning"),
    "evaluate": ("fedopt.cli.evaluate", "score a run's saved modules on a GLUE TSV"),
    "experiment": ("fedopt.cli.experiment", "reproduce the paper's figures"),
    "flower": ("fedopt.cli.flower", "run fedopt inside Flower"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` just that subcommand's module imported (fast start)."""
    parser = _Parser(prog="fedopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # not built yet
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    for opt in ("config", "resume"):  # "" would be the current folder, or silently no file
        v = getattr(args, opt, None)
        if isinstance(v, str) and not v.strip():
            parser.error(f"argument --{opt}: empty path")
    try:
        return int(args._run(args) or 0)
    except FedoptError as exc:
        print(f"fedopt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write at the end failed (disk full, quota): one line, no traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"fedopt {args.command}: error: cannot write{where}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedopt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
