"""What commands print: reports and figures are their output, not log records."""

from __future__ import annotations

import sys


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()  # progress of long commands shows as it happens
