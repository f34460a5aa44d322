"""Run folders and checkpoints: a crafted, damaged, foreign or newer checkpoint is refused with
one line and exit 2 and runs no code; a folder that holds a run is never written over without
--overwrite; stale temporaries are removed; the state codec round-trips without pickle."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedopt import safestate
from fedopt.cli import main
from fedopt.errors import StateFileError
from fedopt.fl.checkpoint import CHECKPOINT, KIND

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"
TINY = ["--set", "rounds=3", "--set", "K=5", "--set", "checkpoint_every=1"]


class _Payload:
    """Unpickling this runs ``touch PATH``: the attack a pickle checkpoint allowed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def _simulate(*args: str) -> int:
    return main(["simulate", "--quiet", "--config", str(QUICK), *TINY, *args])


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (3 rounds, K = 5) with --compare-fedlora."""
    d = tmp_path_factory.mktemp("finished") / "run"
    assert _simulate("--out", str(d), "--compare-fedlora") == 0
    return d


@pytest.fixture
def run(finished, tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    return d


# --- crafted and damaged checkpoints --------------------------------------------------------

@pytest.mark.parametrize("name", [CHECKPOINT, "checkpoint.pkl"])
def test_a_pickle_payload_as_checkpoint_runs_no_code(run, tmp_path, capsys, name):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(sentinel))
    live = tmp_path / "live"  # the payload is real: unpickling it does run the command
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()
    (run / CHECKPOINT).unlink()
    (run / name).write_bytes(payload)
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert name in line and ("pickle" in line or "unpickles" in line)
    assert not sentinel.exists()
    assert (run / name).read_bytes() == payload  # the user's file is left as it was


def _with_version(state: dict, version: int, monkeypatch) -> bytes:
    monkeypatch.setattr(safestate, "FORMAT_VERSION", version)
    data = safestate.dumps(state, KIND)
    monkeypatch.undo()
    return data


def _tampered(data: bytes) -> bytes:
    """The same archive with one number of one array changed (header and checksum kept)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    name = next(k for k, v in members.items() if k != "__state__" and v.dtype.kind == "f" and v.size)
    members[name] = members[name].copy()
    members[name].flat[0] += 1.0
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


@pytest.mark.parametrize("damage, word", [
    ("newer", "newer fedopt"),
    ("truncated", "damaged"),
    ("empty", "empty"),
    ("random", "damaged"),
    ("checksum", "checksum"),
    ("foreign", "not a fedopt-checkpoint"),
    ("folder", "not a file"),
])
def test_a_damaged_checkpoint_is_one_line_exit_2(run, capsys, monkeypatch, damage, word):
    path = run / CHECKPOINT
    good = path.read_bytes()
    path.unlink()
    if damage == "folder":
        path.mkdir()
    else:
        path.write_bytes({
            "newer": lambda: _with_version(safestate.loads(good, KIND), 2, monkeypatch),
            "truncated": lambda: good[: len(good) // 2],
            "empty": lambda: b"",
            "random": lambda: np.random.default_rng(0).bytes(len(good)),
            "checksum": lambda: _tampered(good),
            "foreign": lambda: _npz(x=np.arange(3)),
        }[damage]())
    before = _tree(run)
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert word in line and "checkpoint" in line, line
    assert _tree(run) == before  # nothing was written


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_the_checksum_covers_every_array_and_the_json():
    data = safestate.dumps({"a": np.arange(4.0), "t": 1}, KIND)
    assert safestate.loads(data, KIND)["t"] == 1
    with pytest.raises(StateFileError, match="checksum"):
        safestate.loads(_tampered(data), KIND)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    header = json.loads(members["__state__"].tobytes())
    header["state"]["t"] = 2  # edit the JSON, keep the recorded digest
    members["__state__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with pytest.raises(StateFileError, match="checksum"):
        safestate.loads(_npz(**members), KIND)


def test_stale_temporaries_are_removed_on_resume(run, capsys):
    stale = [run / ".checkpoint-k1ll3d.tmp", run / ".fedopt-summary.json-x1.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    summary = (run / "summary.json").read_bytes()
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 0
    assert not any(p.exists() for p in stale)
    assert (run / "summary.json").read_bytes() == summary  # resuming a finished run: same result


def test_state_round_trips_without_pickle():
    rng = np.random.default_rng(7)
    arrays = [np.arange(6, dtype=np.int16).reshape(2, 3), np.asfortranarray(rng.random((3, 2)))]
    state = {"t": 3, "nan": float("nan"), "neg0": -0.0, "f64": np.float64(0.1), "i8": np.int8(-3),
             "flag": np.bool_(True), "tup": (1, "a", None), "rng": rng.bit_generator.state,
             "rows": [{"z": 1.0, "a": float("inf")}], "arrays": arrays}
    back = safestate.loads(safestate.dumps(state, KIND), KIND)
    assert list(back["rows"][0]) == ["z", "a"]  # key order kept (CSV columns)
    assert np.isnan(back["nan"]) and str(back["neg0"]) == "-0.0" and back["tup"] == (1, "a", None)
    for key in ("f64", "i8", "flag"):
        assert type(back[key]) is type(state[key]) and back[key] == state[key]
    for a, b in zip(state["arrays"], back["arrays"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    g = np.random.default_rng()
    g.bit_generator.state = back["rng"]
    assert g.random() == rng.random()
    with pytest.raises(TypeError, match="object array"):
        safestate.dumps({"bad": np.array([object()])}, KIND)
    with pytest.raises(TypeError, match="not plain data"):
        safestate.dumps({"bad": {1, 2}}, KIND)


# --- run folders ------------------------------------------------------------------------------

def test_simulate_over_a_finished_run_changes_nothing(run, capsys):
    before = _tree(run)
    assert "fedlora/summary.json" in before and "comparison.json" in before
    assert _simulate("--out", str(run), "--set", "seed=5") == 2
    line = _one_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert _tree(run) == before


def test_overwrite_leaves_no_stale_file(run, capsys):
    (run / "notes.txt").write_text("mine")  # not fedopt's: kept
    assert main(["simulate", "--quiet", "--config", str(QUICK), "--set", "rounds=2", "--set", "K=5",
                 "--out", str(run), "--overwrite"]) == 0
    assert not (run / "fedlora").exists() and not (run / "comparison.json").exists()
    assert json.loads((run / "summary.json").read_text())["rounds"] == 2
    assert (run / "notes.txt").read_text() == "mine"
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_resume_and_overwrite_together_are_refused(run, capsys):
    before = _tree(run)
    assert main(["simulate", "--quiet", "--resume", str(run), "--overwrite"]) == 2
    assert "--overwrite" in _one_line(capsys)
    assert _tree(run) == before


def test_experiment_over_a_figure_folder_is_refused_before_work(tmp_path, capsys):
    d = tmp_path / "fig3"
    d.mkdir()
    (d / "summary.json").write_text("{}\n")
    (d / "fig3.md").write_text("old\n")
    before = _tree(tmp_path)
    assert main(["experiment", "fig3", "--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert "already holds a run" in line and "--overwrite" in line and "--resume" not in line
    assert _tree(tmp_path) == before


def test_experiment_resume_with_a_stored_run_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "fig2" / "runs" / "K6_seed0.json").mkdir(parents=True)
    assert main(["experiment", "fig2", "--quick", "--out", str(tmp_path), "--no-progress",
                 "--resume"]) == 2
    line = _one_line(capsys)
    assert "K6_seed0.json" in line and "not a file" in line


def test_flower_simulate_over_a_run_is_refused_before_ray(run, capsys):
    pytest.importorskip("flwr")
    before = _tree(run)
    assert main(["flower", "simulate", "--config", str(QUICK), "--set", "K=5", "--set", "rounds=2",
                 "--out", str(run)]) == 2
    line = _one_line(capsys)
    assert "already holds a run" in line and "--overwrite" in line
    assert _tree(run) == before


@pytest.mark.parametrize("policy", ["primal_dual", "lyapunov", "greedy", "one_shot"])
def test_allocator_state_round_trips_through_the_checkpoint_codec(policy):
    """Policy, estimator and warm-start state are plain data: a fresh allocator loaded from the
    decoded bytes plays the next round exactly as the original does."""
    from fedopt import RoundAllocator, RoundState, SystemConfig
    from fedopt.safestate import Stateful

    cfg = SystemConfig(K=4)
    rng = np.random.default_rng(0)

    def state(t):
        return RoundState(t=t, distance=rng.uniform(20, 150, 4), data_size=np.full(4, 500.0),
                          loss=rng.uniform(0.3, 1.0, (4, 3)), grad_sq=rng.uniform(1, 10, (4, 3)),
                          cpu_freq=np.full(4, 1.5e9), cycles_per_bit=np.full(4, 1000.0),
                          samples=np.full(4, 40.0))

    a = RoundAllocator(cfg, policy=policy)
    assert isinstance(a, Stateful)
    for t in range(3):
        a.allocate(state(t))
    b = RoundAllocator(cfg, policy=policy)
    b.load_state_dict(safestate.loads(safestate.dumps(a.state_dict(), KIND), KIND))
    nxt = state(3)
    x, y = a.allocate(nxt), b.allocate(nxt)
    for key in ("x", "p", "b", "q"):
        assert np.array_equal(getattr(x, key), getattr(y, key)), key
    assert x.objective == y.objective


# --- re-signed crafted checkpoints (the sha256 is not keyed) ---------------------------------

def _resign(good: bytes, edit) -> bytes:
    """``good`` edited by ``edit(tree, members)`` with a valid sha256 again."""
    with np.load(io.BytesIO(good), allow_pickle=False) as npz:
        members = {n: npz[n] for n in npz.files}
    header = json.loads(members.pop("__state__").tobytes().decode())
    edit(header["state"], members)
    header["sha256"] = safestate._digest(json.dumps(header["state"], separators=(",", ":")),
                                         members)
    return _npz(__state__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **members)


def _set(key, value):
    return lambda tree, members: tree.__setitem__(key, value)


@pytest.mark.parametrize("edit", [
    _set("t", 10**30), _set("t", 1), _set("t", -1), _set("t", True), _set("rows", 5),
    _set("params", []), _set("ensembles", {"a": 1}), _set("positions", [1.0, 2.0]),
    lambda tree, m: m.__setitem__("a0", m["a0"].reshape(-1)),
    lambda tree, m: m.__setitem__("a0", m["a0"] * np.nan),
    lambda tree, m: m.__setitem__("a0", m["a0"].astype(np.float32)),
    lambda tree, m: [m.__setitem__(k, np.array(["x"] * v.size).reshape(v.shape))
                     for k, v in list(m.items()) if v.ndim == 1 and v.dtype == float],
    lambda tree, m: [m.__setitem__(k, v.reshape(-1)) for k, v in list(m.items())
                     if v.shape == (5, 2)],
], ids=["t_huge", "t_rows", "t_neg", "t_bool", "rows_int", "params_empty", "ensembles_obj",
        "positions_list", "a0_reshaped", "params_nan", "a0_float32", "string_1d", "positions_1d"])
def test_a_resigned_checkpoint_that_does_not_fit_is_one_line(run, capsys, edit):
    path = run / CHECKPOINT
    path.write_bytes(_resign(path.read_bytes(), edit))
    before = _tree(run)
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert "does not fit this run" in line and str(path) in line, line
    assert _tree(run) == before


def test_an_npy_saved_as_checkpoint_npz_is_one_line(run, capsys):
    buf = io.BytesIO()
    np.save(buf, np.arange(5.0))
    (run / CHECKPOINT).write_bytes(buf.getvalue())
    before = _tree(run)
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert "single numpy array" in line and "checkpoint" in line, line
    assert _tree(run) == before


def test_a_deeply_nested_header_is_one_line(run, capsys):
    deep = b"[" * 100_000 + b"]" * 100_000
    (run / CHECKPOINT).write_bytes(_npz(__state__=np.frombuffer(deep, dtype=np.uint8)))
    before = _tree(run)
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert "nested too deeply" in line and "checkpoint" in line, line
    assert _tree(run) == before


def test_a_fifo_as_checkpoint_is_one_line(run, capsys):
    (run / CHECKPOINT).unlink()
    os.mkfifo(run / CHECKPOINT)
    assert main(["simulate", "--quiet", "--resume", str(run)]) == 2
    assert "not a file" in _one_line(capsys)


def test_checkpoint_size_limit_is_4_gib_not_the_256_mib_of_other_inputs(tmp_path):
    """A K = 100 run with AdamW state kept writes 0.2-0.8 GB checkpoints: a 300 MiB file is
    read (and refused as damaged: sparse zeros), one over 4 GiB is refused by its size alone."""
    from fedopt.fl.checkpoint import MAX_CHECKPOINT_BYTES, load_checkpoint

    path = tmp_path / CHECKPOINT
    for size, says in ((300 * 2**20, None), (MAX_CHECKPOINT_BYTES + 1, "4096 MiB limit")):
        with open(path, "wb") as fh:
            fh.truncate(size)  # sparse: no disk used
        with pytest.raises(StateFileError) as exc:
            load_checkpoint(tmp_path)
        msg = str(exc.value)
        assert "\n" not in msg and (says in msg if says else "MiB limit" not in msg), msg
