"""The `linewatch` command line as a tree every package adds to: a module named `commands` anywhere under
`linewatch` defines `register(commands: Commands)`, and `linewatch.tools.cli` finds it (faust's
autodiscovery, telegraf's one registration line). Handlers take the parsed arguments and return the exit
status; a person's mistake is a `UsageError`, printed as one line that says what to do."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """What the person typed or configured cannot work; the message says what to do instead."""


class Commands:
    def __init__(self, prog: str = "linewatch", description: str | None = None) -> None:
        self.parser = argparse.ArgumentParser(
            prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self._groups: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {}
        self._parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): self.parser}

    def _subparsers(self, path: tuple[str, ...]) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        if path not in self._groups:
            parent = self._parsers[path]
            self._groups[path] = parent.add_subparsers(dest="_".join(("command", *path)), metavar="COMMAND")
            self._groups[path].required = True
        return self._groups[path]

    def group(self, path: str, summary: str) -> None:
        """A command that only holds others (`alarms`, `bench`); several packages may add to it."""
        words = tuple(path.split())
        if words not in self._parsers:
            self._parsers[words] = self._subparsers(words[:-1]).add_parser(words[-1], help=summary, description=summary)

    def add(self, path: str, summary: str, handler: Handler) -> argparse.ArgumentParser:
        """`path` is the words after `linewatch`, e.g. "alarms ack"; returns the parser for its arguments."""
        words = tuple(path.split())
        if words in self._parsers:
            raise ValueError(f"command {path!r} is registered twice")
        parser = self._subparsers(words[:-1]).add_parser(words[-1], help=summary, description=summary)
        parser.set_defaults(handler=handler)
        self._parsers[words] = parser
        return parser

    def run(self, argv: list[str]) -> int:
        args = self.parser.parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
