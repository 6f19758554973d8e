"""The `wanflow` command: a small dispatcher for the subcommands the tool packages provide.

A package joins the CLI by having a `commands` module with `register(subparsers)`; `register` adds its
subcommands with `subparsers.add_parser(...)` and gives each parser a `func(args) -> int` default (the exit code).
Packages are found under `wanflow_tools/` at start-up, so a new subcommand needs no change here:

    wanflow_tools/emulator/commands.py  -> wanflow emulator
    wanflow_tools/client/commands.py    -> wanflow submit | status | wait | list | cancel | download
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Iterator
from types import ModuleType

import wanflow_tools

COMMANDS_MODULE = "commands"


def command_modules() -> Iterator[ModuleType]:
    """Every `wanflow_tools.<package>.commands` module, in package-name order."""
    for package in sorted(pkgutil.iter_modules(wanflow_tools.__path__), key=lambda found: found.name):
        if not package.ispkg:
            continue
        name = f"{wanflow_tools.__name__}.{package.name}.{COMMANDS_MODULE}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name == name:  # the package simply has no subcommands
                continue
            raise
        if hasattr(module, "register"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wanflow",
        description="wanflow: Wan image-to-video (DashScope) on AWS serverless, and its developer tools.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
