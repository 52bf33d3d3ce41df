"""The `linewatch` command line as a tree every package adds to: a module named `commands` anywhere under
`linewatch` defines `register(commands: Commands)`, and `linewatch.tools.cli` finds it (faust's
autodiscovery, telegraf's one registration line). Handlers take the parsed arguments and return the exit
status; a person's mistake is a `UsageError`, printed as one line that says what to do (`exit_with`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

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


def exit_with(run: Callable[[], int | None], prog: str) -> NoReturn:
    """Run a command, or a service's `main`, and exit with its status. A person's mistake or a server that is not
    there ends in one line, `prog: what to do`, and exit 2; a bug ends in its traceback, which is the report."""
    try:
        status = run() or 0
    except KeyboardInterrupt:
        status = 130
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise
        sys.stderr.write(f"{prog}: {message}\n")
        status = 2
    sys.exit(status)


def explain(exc: Exception) -> str | None:
    """What went wrong in words that say what to do; None for a bug."""
    import ssl
    import urllib.error

    from pydantic import ValidationError

    if isinstance(exc, UsageError):
        return str(exc)
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = "__".join(str(part) for part in first["loc"]).upper()
        return f"setting LINEWATCH_{where}: {first['msg']}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, ssl.SSLCertVerificationError):
        return (
            f"the server's certificate is not trusted ({exc.reason.verify_message}): set LINEWATCH_API_CAFILE to "
            "the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}: check the certificate and key files (PEM) and that they belong together"
    if isinstance(exc, urllib.error.URLError | ConnectionError):
        reason = getattr(exc, "reason", exc)
        return f"cannot reach a server ({reason}): check LINEWATCH_API_URL / LINEWATCH_INFLUX__URL, and that it runs"
    if type(exc).__module__.startswith(("kafka.", "aiokafka.")):
        return f"Kafka: {exc!r}: check LINEWATCH_KAFKA__BOOTSTRAP_SERVERS and that the broker runs"
    return None
