"""argparse value types shared by the subcommands."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """``"3,5,8"`` -> [3, 5, 8]; a bad value is argparse's one-line error (exit 2)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    """``"0.1,0.2"`` -> [0.1, 0.2]; a bad value is argparse's one-line error (exit 2)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
