"""`linewatch`: one command for the plant pipeline. Every package adds its own subcommands from a module named
`commands` (see `linewatch.core.commandline`); nothing here knows them by name."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import linewatch
from linewatch.core import logs
from linewatch.core.commandline import Commands, UsageError

DESCRIPTION = """linewatch: telemetry and quality control for all-solid-state battery plants.
Settings come from LINEWATCH_* environment variables, e.g. LINEWATCH_PLANT_FILE (the plant model every command
and service reads), LINEWATCH_KAFKA__BOOTSTRAP_SERVERS, LINEWATCH_INFLUX__URL; see the README."""


def discover() -> Commands:
    commands = Commands("linewatch", description=DESCRIPTION)
    for info in pkgutil.walk_packages(linewatch.__path__, "linewatch."):
        if info.name.rpartition(".")[2] == "commands":
            importlib.import_module(info.name).register(commands)
    return commands


def main(argv: list[str] | None = None) -> None:
    logs.configure("linewatch", os.environ.get("LINEWATCH_LOG_LEVEL", "WARNING"))
    try:
        status = discover().run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        status = 130
    except Exception as exc:  # a person's mistake or an absent server: one line, no traceback
        message = explain(exc)
        if message is None:
            raise
        sys.stderr.write(f"linewatch: {message}\n")
        status = 2
    sys.exit(status)


def explain(exc: Exception) -> str | None:
    """What went wrong in words that say what to do; None for a bug (its traceback is the report)."""
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
    if isinstance(exc, urllib.error.URLError | ConnectionError):
        reason = getattr(exc, "reason", exc)
        return f"cannot reach a server ({reason}): check LINEWATCH_API_URL / LINEWATCH_INFLUX__URL, and that it runs"
    if type(exc).__module__.startswith(("kafka.", "aiokafka.")):
        return f"Kafka: {exc!r}: check LINEWATCH_KAFKA__BOOTSTRAP_SERVERS and that the broker runs"
    return None


if __name__ == "__main__":
    main()
