"""Shared problem factories for the solver tests (as CVXPY's solver tests share problems)."""

from __future__ import annotations

import json
from pathlib import Path

from fedopt.instances import load_instance

# the canonical examples of ../shared/instances, copied into the repo with their references
SHARED = Path(__file__).resolve().parents[2] / "experiments" / "instances"


def shared_examples(kind: str) -> list[Path]:
    return sorted(SHARED.glob(f"{kind}*.json"))


def load_with_reference(path: Path):
    return load_instance(path), json.loads(path.read_text())["reference"]
