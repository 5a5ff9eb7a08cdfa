"""The ``nas`` command line.

Commands register themselves with :func:`command` (a registry, not an if/elif chain):
the path (``"space list"``), a help line, and argument declarations. Heavy imports
(torch, ray) happen inside the command bodies so ``nas --help`` stays fast.

Errors: an :class:`search_spaces.InputError` (bad file, field, option) prints one
``nas: error: ...`` line and exits 2 without a traceback; argparse's own usage errors
also exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from typing import Callable

EXIT_USAGE = 2
EXIT_FAILED = 1
# Modules whose import registers commands (one module per command group).
COMMAND_MODULES = ("nas.commands.space", "nas.commands.latency", "nas.commands.data",
                   "nas.commands.search", "nas.commands.supernet", "nas.commands.finish")


@dataclass
class Command:
    path: tuple[str, ...]
    help: str
    run: Callable[[argparse.Namespace], int | None]
    arguments: list[tuple[tuple, dict]] = field(default_factory=list)


_COMMANDS: dict[tuple[str, ...], Command] = {}


def arg(*flags, **kwargs):
    """Declare an argparse argument on a command function (stack above ``@command``)."""

    def decorate(fn):
        fn.__dict__.setdefault("_nas_args", []).insert(0, (flags, kwargs))
        return fn

    return decorate


def command(path: str, help: str):
    """Register ``fn(args) -> exit code | None`` as ``nas <path>``."""

    def decorate(fn):
        key = tuple(path.split())
        _COMMANDS[key] = Command(key, help, fn, getattr(fn, "_nas_args", []))
        return fn

    return decorate


class UsageError(Exception):
    """Raised by commands for a bad combination of options (exit 2)."""


_KIND_NAMES = {float: "numbers", int: "integers"}


def comma_list(text: str, flag: str, kind: Callable[[str], object] = str, allow_empty: bool = False) -> list:
    """The items of a comma-separated option value (``--targets 3,5``), blanks dropped,
    each converted by ``kind`` (str, int or float). An item ``kind`` rejects, or no item
    at all unless ``allow_empty``, is a :class:`UsageError` naming ``flag``."""
    try:
        values = [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated {_KIND_NAMES.get(kind, 'values')}, got {text!r}") from None
    if not values and not allow_empty:
        raise UsageError(f"{flag} is empty")
    return values


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a missing dependency is a real error
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="nas", description="Search, measure, compress and export CPU object detectors.")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="cmd0", metavar="COMMAND")}
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}
    for key in sorted(_COMMANDS):
        cmd = _COMMANDS[key]
        for depth in range(1, len(key) + 1):
            prefix = key[:depth]
            if prefix in parsers:
                continue
            parent = key[:depth - 1]
            if parent not in groups:
                groups[parent] = parsers[parent].add_subparsers(dest=f"cmd{depth - 1}", metavar="COMMAND")
            is_leaf = depth == len(key)
            sub = groups[parent].add_parser(prefix[-1], help=cmd.help if is_leaf else f"{prefix[-1]} commands")
            parsers[prefix] = sub
        leaf = parsers[key]
        for flags, kwargs in cmd.arguments:
            leaf.add_argument(*flags, **kwargs)
        leaf.set_defaults(_command=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    from search_spaces.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = getattr(args, "_command", None)
    if cmd is None:
        # A group without its sub-command: show that group's help.
        parser.parse_args([a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")] + ["--help"])
        return EXIT_USAGE
    try:
        return int(cmd.run(args) or 0)
    except (InputError, UsageError, FileNotFoundError) as exc:
        print(f"nas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nas: interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except Exception as exc:
        # Known run-time failures (a diverged training) are reported, not dumped: they
        # say what to change. Anything else is a bug and keeps its traceback.
        from evaluators.trainer import TrainingFailure

        if not isinstance(exc, TrainingFailure):
            raise
        print(f"nas: error: training failed: {exc}; lower train.lr or raise train.warmup_steps in the config "
              "(finished stages are kept in the output folder)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
