"""`linewatch`: one command for the plant pipeline. Every package adds its own subcommands from a module named
`commands` (see `linewatch.core.commandline`); nothing here knows them by name."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import linewatch
from linewatch.core import logs
from linewatch.core.commandline import Commands, exit_with

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
    exit_with(lambda: discover().run(sys.argv[1:] if argv is None else argv), "linewatch")


if __name__ == "__main__":
    main()
