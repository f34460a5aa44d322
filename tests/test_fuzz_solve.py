"""Fuzz ``fedopt solve`` with mutated instance files (issue 13): no traceback, no hang.

Each example takes one of the shipped instances (experiments/instances/*.json), applies a
few mutations (a value's type, NaN/inf written as tokens or strings, signs, magnitudes near
overflow, lists of the wrong length or depth, dropped or extra keys, the wrong problem, and
damaged encodings: invalid UTF-8, UTF-16, a BOM, truncation) and runs ``fedopt solve`` in
this process. The answer must be exit 0 with one strict JSON object (a point labelled
optimal or feasible has a finite objective), or exit 1/2 with exactly one stderr line.

``FEDOPT_FUZZ_EXAMPLES`` sets the example count (default 100; issue 13 asks for >= 2,000
once). With ``FEDOPT_FUZZ_RECORD=DIR`` failures are not raised but written to DIR, one
JSON instance per failure class (the smallest seen), to survey a long run.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "experiments" / "instances").glob("*.json"))}
EXAMPLES = int(os.environ.get("FEDOPT_FUZZ_EXAMPLES", "100"))
RECORD = os.environ.get("FEDOPT_FUZZ_RECORD")
HANG_SECONDS = 20  # the watchdog: an answer takes well under a second at --time-limit 1
METHODS = {"bandwidth": ["auto", "auto", "alg1", "lambertw"], "power": ["auto", "auto", "bounded", "max"],
           "round": ["bcd", "joint"]}

_NAN_TOKEN = object()  # written as the bare JSON token NaN (Python's json accepts it)
WEIRD = [True, False, None, "1.0", "NaN", "inf", "-Infinity", "", "abc", [], {}, [[1.0]],
         0, -0.0, -1, 1, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 1e-308, 1e300,
         math.inf, -math.inf, _NAN_TOKEN, 2**64, -(2**63)]


def _scaled(v, f: float):
    return v * f if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _weird():
    return st.sampled_from(WEIRD)


@st.composite
def mutated(draw) -> tuple[str, bytes, str]:
    """(problem asked for, file bytes, method)."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    inst = json.loads(json.dumps(SEEDS[name]))
    inst.pop("reference", None)
    problem = inst["problem"]
    keys = [k for k in inst if k != "problem"]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        value = inst.get(key)
        op = draw(st.sampled_from(["replace", "element", "sign", "scale", "resize", "nest", "drop",
                                   "extra", "problem", "all_elements", "all_lists", "tight_budget"]))
        if op == "replace":
            inst[key] = draw(_weird())
        elif op == "element" and isinstance(value, list) and value:
            i = draw(st.integers(0, len(value) - 1))
            value[i] = draw(_weird())
        elif op == "all_elements" and isinstance(value, list):
            inst[key] = [draw(_weird())] * len(value)
        elif op == "sign":
            if isinstance(value, list):
                inst[key] = [-v if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                inst[key] = -value
        elif op == "scale":
            f = draw(st.sampled_from([1e308, 1e300, 1e-300, 1e-308, 1e154, 0.0]))
            inst[key] = [_scaled(v, f) for v in value] if isinstance(value, list) else _scaled(value, f)
        elif op == "resize" and isinstance(value, list):
            n = draw(st.sampled_from([0, 1, len(value) - 1, len(value) + 1, 2 * len(value) + 3]))
            inst[key] = (value * (n // max(len(value), 1) + 1))[:n] if value else [1.0] * n
        elif op == "nest":
            inst[key] = [value]
        elif op == "drop":
            inst.pop(key, None)
        elif op == "extra":
            inst[draw(st.sampled_from(["W", "w", "x", "budget", "p_max", "note"]))] = draw(_weird())
        elif op == "all_lists":  # still consistent: N = 0, 1 or many (degenerate but valid)
            n = draw(st.sampled_from([0, 1, 2, 40]))
            for k, v in list(inst.items()):
                if isinstance(v, list):
                    inst[k] = (v * (n // max(len(v), 1) + 1))[:n] if v else v
        elif op == "tight_budget" and isinstance(inst.get("b_min"), list):
            # the budget at Σ b_min, just inside or outside the validator's slack
            bm = [v for v in inst["b_min"] if isinstance(v, (int, float)) and not isinstance(v, bool)]
            inst["budget"] = math.fsum(bm) * (1 + draw(st.sampled_from([-5e-13, -1e-15, 0.0, 1e-15, 5e-13])))
        elif op == "problem":
            inst["problem"] = draw(st.sampled_from(["power", "bandwidth", "", None, 3]))
    text = json.dumps(_encode_nan(inst)).replace('"__nan__"', "NaN")
    data = text.encode()
    enc = draw(st.sampled_from(["utf8"] * 6 + ["invalid_byte", "utf16", "bom", "truncate", "nul"]))
    if enc == "invalid_byte":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[i:]
    elif enc == "utf16":
        data = text.encode("utf-16")
    elif enc == "bom":
        data = b"\xef\xbb\xbf" + data
    elif enc == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif enc == "nul":
        data = data.replace(b",", b",\x00", 1)
    asked = draw(st.sampled_from([problem] * 9 + ["power" if problem == "bandwidth" else "bandwidth"]))
    return asked, data, draw(st.sampled_from(METHODS[asked]))


def _encode_nan(obj):
    """json.dumps cannot write the NaN token for a marker object: substitute a placeholder."""
    if obj is _NAN_TOKEN:
        return "__nan__"
    if isinstance(obj, list):
        return [_encode_nan(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _encode_nan(v) for k, v in obj.items()}
    return obj


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Hang(f"no answer within {HANG_SECONDS} s")


def solve_file(path: Path, problem: str, method: str, capsys) -> tuple[object, str, str]:
    from fedopt.cli import main

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        rc: object = main(["solve", problem, str(path), "--method", method, "--json", "--time-limit", "1"])
    except SystemExit as exc:
        rc = exc.code
    except BaseException as exc:  # noqa: BLE001  a traceback is the finding
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
        rc = f"{type(exc).__name__} at {where}: {' '.join(str(exc).split())[:120]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def problems_with(rc, out: str, err: str) -> str | None:
    """None if the answer keeps the CLI's promise, else a short class name of the failure."""
    if isinstance(rc, str):
        return rc
    if rc in (1, 2):
        lines = [line for line in err.split("\n") if line.strip()]
        if len(lines) != 1 or "Traceback" in err:
            return f"exit {rc} with {len(lines)} stderr lines"
        return None
    if rc != 0:
        return f"exit {rc!r}"
    try:
        sol = json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError as exc:
        return f"exit 0 but stdout is not strict JSON ({str(exc)[:40]})"
    obj = sol.get("objective")
    if sol.get("status") in ("optimal", "feasible") and not (isinstance(obj, (int, float)) and math.isfinite(obj)):
        return f"status {sol['status']} with objective {obj!r}"
    return None


def _record(kind: str, problem: str, method: str, data: bytes) -> None:
    folder = Path(RECORD)
    folder.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "_" for ch in kind)[:90]
    path = folder / f"{problem}-{method}-{slug}.json"
    if not path.exists() or len(data) < path.stat().st_size:
        path.write_bytes(data)
    with open(folder / "log.txt", "a") as fh:
        fh.write(f"{problem}\t{method}\t{kind}\n")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=RECORD is None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated())
def test_solve_mutated_instance(case, tmp_path, capsys):
    problem, data, method = case
    path = tmp_path / "instance.json"
    path.write_bytes(data)
    rc, out, err = solve_file(path, problem, method, capsys)
    kind = problems_with(rc, out, err)
    if RECORD:
        if kind:
            _record(kind, problem, method, data)
        return
    assert kind is None, f"{problem} --method {method}: {kind}\n{data[:300]!r}\nstderr: {err[-300:]}"
