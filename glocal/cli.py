"""The ``glocal`` command line: one sub-command per stage of the pipeline.

Each sub-command lives in its own module exposing ``configure_parser(parser)`` and
``run(args) -> int``; modules are imported lazily so ``glocal --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("glocal.train", "one hyperparameter-optimization run (task x strategy x seed) into a run directory"),
    "extract": ("glocal.extract", "exact hypergradient trajectory at fixed phi, with glocal/local estimates over tau"),
    "analyze": ("glocal.analysis", "error against trajectory length from extract outputs, with the bound"),
    "nqm": ("glocal.nqm_runs", "the noisy quadratic model's answer key or short-horizon-bias curve (tasks of kind nqm)"),
    "theory": ("theory_checks.runner", "the quadratic-system theory checks at full scale"),
    "figures": ("figures.cli", "every figure of the reproduction, from result files"),
    "tables": ("figures.tables", "summary tables and results/README.md, from result files"),
    "bench": ("benchmarks.run", "speed and memory benchmarks against peers"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command (or only ``only``, to keep start-up fast)."""
    from glocal import __version__

    parser = argparse.ArgumentParser(
        prog="glocal",
        description="Glocal hypergradient estimation with the Koopman operator (Hataya & Kawahara, 2402.02741).",
    )
    parser.add_argument("--version", action="version", version=f"glocal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # optional parts (benchmarks) may be absent from an install
            if exc.name and module_name.startswith(exc.name.split(".")[0]):
                continue
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``glocal`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the module of the command being run: each pulls in heavy libraries.
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, KeyError, OSError) as exc:
        # Bad input, or an output that cannot be written (no space, no permission, a locked run
        # directory): one clear line naming the key, file or value, no traceback.
        print(f"glocal {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
