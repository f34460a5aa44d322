"""Shared problem factories for the solver tests (as CVXPY's solver tests share problems)."""

from __future__ import annotations

import json
from pathlib import Path

from fedopt.instances import load_instance

SHARED = Path(__file__).resolve().parents[3] / "shared" / "instances"
if not SHARED.is_dir():  # the repo may sit elsewhere; fall back to the absolute location
    SHARED = Path("/work/shared/instances")


def shared_examples(kind: str) -> list[Path]:
    return sorted(SHARED.glob(f"{kind}*.json"))


def load_with_reference(path: Path):
    return load_instance(path), json.loads(path.read_text())["reference"]
