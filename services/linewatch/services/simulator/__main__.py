"""`python -m linewatch.services.simulator [options]`: the simulator as a process of its own (launcher, compose)."""

from __future__ import annotations

import argparse
import sys

from linewatch.services.simulator.commands import add_arguments, simulate


def main() -> None:
    parser = argparse.ArgumentParser(prog="linewatch simulate", description=__doc__)
    add_arguments(parser)
    sys.exit(simulate(parser.parse_args()))


if __name__ == "__main__":
    main()
