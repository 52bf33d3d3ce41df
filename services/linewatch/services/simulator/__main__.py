"""`python -m linewatch.services.simulator [options]`: the simulator as a process of its own (launcher, compose)."""

from __future__ import annotations

import argparse
import sys

from linewatch.core.commandline import exit_with
from linewatch.services.simulator.commands import add_arguments, simulate


def main(argv: list[str] | None = None) -> int:
    """With no `argv` (`linewatch service simulator`), the defaults; the launcher passes options."""
    parser = argparse.ArgumentParser(prog="linewatch simulate", description=__doc__)
    add_arguments(parser)
    return simulate(parser.parse_args(argv or []))


if __name__ == "__main__":
    exit_with(lambda: main(sys.argv[1:]), "linewatch simulate")
