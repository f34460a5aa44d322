"""GLUE data for the LoRA backend: TSV reading, data-dir resolution, Dirichlet label skew.

The GLUE TSVs are read where they live (``--data-dir``, ``$FEDOPT_DATA``, or
``../shared/data/glue`` beside the repository); they are never copied. HF ``datasets`` is a
fallback used only when it is installed and a hub is reachable (``HF_HUB_OFFLINE=0``).

The UEs' local datasets D_k follow MODEL.md ("Sets, data, decisions"): a Dirichlet(alpha_dir)
label skew with sizes |D_k| from the population's ``n_data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = [
    "TaskSpec",
    "TASKS",
    "TextData",
    "task_spec",
    "resolve_data_dir",
    "read_tsv",
    "load_task",
    "dirichlet_partition",
]


@dataclass(frozen=True)
class TaskSpec:
    """A GLUE classification task: its folder, text columns and label names (index = class)."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    labels: tuple[str, ...]
    hf_name: str


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", "SST-2", ("sentence",), ("0", "1"), "sst2"),
    "qnli": TaskSpec("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), "qnli"),
    "rte": TaskSpec("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "rte"),
}


def task_spec(task: str) -> TaskSpec:
    key = task.lower().replace("-", "")
    if key not in TASKS:
        raise ConfigError(f"task: unknown GLUE task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[key]


@dataclass
class TextData:
    """Sentences (or sentence pairs) and integer labels, all of length n."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    skipped: list[int] = field(default_factory=list)  # line numbers of malformed rows (read_tsv)

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, idx: np.ndarray) -> TextData:
        idx = np.asarray(idx, dtype=int)
        b = None if self.text_b is None else [self.text_b[i] for i in idx]
        return TextData([self.text_a[i] for i in idx], b, self.labels[idx])


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir``, else ``$FEDOPT_DATA``, else ``<repo>/../shared/data/glue`` if present."""
    if data_dir:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise ConfigError(f"data_dir: {path} is not a directory")
        return path
    env = os.environ.get("FEDOPT_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise ConfigError(f"FEDOPT_DATA: {path} is not a directory")
        return path
    default = _repo_root().parent / "shared" / "data" / "glue"
    return default if default.is_dir() else None


def read_tsv(path: str | os.PathLike, task: str | TaskSpec, *, strict: bool = False) -> TextData:
    """Read a GLUE-format TSV (header row, tab separated, no quoting) with a label column.

    Labels may be class names (``entailment``) or indices (``0``/``1``). A row whose field
    count differs from the header's is skipped, as GLUE's own loaders do, and its line number
    kept in ``TextData.skipped``; with ``strict`` it is a :class:`ConfigError` instead. Blank
    lines are not rows.
    """
    from ..files import read_text

    spec = task if isinstance(task, TaskSpec) else task_spec(task)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tsv: file not found: {path}")
    lines = read_text(path, "tsv").split("\n")
    header = lines[0].rstrip("\r").split("\t")
    if "label" not in header:
        raise ConfigError(f"tsv: {path} has no 'label' column (columns: {', '.join(header)})")
    missing = [c for c in spec.text_columns if c not in header]
    if missing:
        raise ConfigError(f"tsv: {path} has no '{missing[0]}' column, needed for {spec.name} "
                          f"(columns: {', '.join(header)})")
    cols = [header.index(c) for c in spec.text_columns]
    lab = header.index("label")
    index = {name: i for i, name in enumerate(spec.labels)}
    a: list[str] = []
    b: list[str] = []
    y: list[int] = []
    skipped: list[int] = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        if not line.strip():
            continue
        if len(fields) != len(header):
            if strict:
                raise ConfigError(f"tsv: {path} line {lineno} has {len(fields)} tab-separated "
                                  f"fields, the header has {len(header)}")
            skipped.append(lineno)  # GLUE's own loaders skip the few malformed rows too
            continue
        raw = fields[lab].strip()
        if raw in index:
            y.append(index[raw])
        elif raw.isascii() and raw.isdigit() and int(raw) < len(spec.labels):
            y.append(int(raw))
        else:
            raise ConfigError(f"tsv: {path} line {lineno}: label {raw!r} is not one of "
                              f"{', '.join(spec.labels)}")
        a.append(fields[cols[0]].strip())
        if len(cols) > 1:
            b.append(fields[cols[1]].strip())
    if not y:
        raise ConfigError(f"tsv: {path} has no labelled rows")
    return TextData(a, b if len(cols) > 1 else None, np.asarray(y, dtype=np.int64), skipped)


def _hub_reachable() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1") == "0" and os.environ.get("HF_DATASETS_OFFLINE") != "1"


def _load_hf(spec: TaskSpec) -> tuple[TextData, TextData]:
    import datasets  # optional; only imported when a hub is reachable

    ds = datasets.load_dataset("glue", spec.hf_name)

    def conv(split) -> TextData:
        a = list(split[spec.text_columns[0]])
        b = list(split[spec.text_columns[1]]) if len(spec.text_columns) > 1 else None
        return TextData(a, b, np.asarray(split["label"], dtype=np.int64))

    return conv(ds["train"]), conv(ds["validation"])


def splits_dev(task: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load_task` carves both train and test out of ``dev.tsv`` for ``task``
    (its GLUE folder has a dev.tsv but no train.tsv: QNLI here)."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return False
    spec = task_spec(task)
    folder = next((p for p in (root / spec.folder, root / spec.folder.lower(), root / spec.name)
                   if p.is_dir()), None)
    return folder is not None and (folder / "dev.tsv").is_file() and not (folder / "train.tsv").is_file()


def load_task(task: str, data_dir: str | os.PathLike | None = None, seed: int = 0,
              test_fraction: float = 0.3) -> tuple[TextData, TextData, str]:
    """(train, test, note) for a GLUE task.

    With both ``train.tsv`` and ``dev.tsv`` the dev split is the test set. With ``dev.tsv``
    only (QNLI here), a seeded stratified split of dev gives train and test, and ``note`` says
    so; callers print it.
    """
    spec = task_spec(task)
    root = resolve_data_dir(data_dir)
    if root is None:
        if _hub_reachable():
            try:
                train, test = _load_hf(spec)
            except ImportError:
                raise ConfigError("data_dir: no GLUE folder found and HF datasets is not installed; "
                                  "pass --data-dir or set FEDOPT_DATA") from None
            return train, test, f"{spec.name}: HF datasets glue/{spec.hf_name} (train, validation)"
        raise ConfigError("data_dir: no GLUE folder found (looked at ../shared/data/glue); "
                          "pass --data-dir or set FEDOPT_DATA")
    folder = root / spec.folder
    if not folder.is_dir():
        alt = [p for p in (root / spec.folder.lower(), root / spec.name) if p.is_dir()]
        if not alt:
            raise ConfigError(f"data_dir: {root} has no {spec.folder}/ folder for task {spec.name}")
        folder = alt[0]
    train_tsv, dev_tsv = folder / "train.tsv", folder / "dev.tsv"
    if not dev_tsv.is_file():
        raise ConfigError(f"data_dir: {folder} has no dev.tsv")
    dev = read_tsv(dev_tsv, spec)
    if train_tsv.is_file():
        return read_tsv(train_tsv, spec), dev, f"{spec.name}: train.tsv for training, dev.tsv for test"
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction: must be in (0, 1), got {test_fraction:g}")
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(dev.labels):  # stratified, so both halves keep dev's label balance
        idx = rng.permutation(np.flatnonzero(dev.labels == c))
        test_idx.append(idx[: int(round(test_fraction * idx.size))])
    test_mask = np.zeros(len(dev), bool)
    test_mask[np.concatenate(test_idx)] = True
    train, test = dev.subset(np.flatnonzero(~test_mask)), dev.subset(np.flatnonzero(test_mask))
    note = (f"{spec.name}: only dev.tsv is available, so it is split (seed {seed}, stratified) into "
            f"{len(train)} training and {len(test)} test examples; accuracies are on that test part")
    return train, test, note


def dirichlet_partition(labels: np.ndarray, sizes: np.ndarray, alpha: float,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint local datasets D_k with a Dirichlet(alpha) label skew (MODEL.md, data).

    UE k draws class proportions pi_k ~ Dir(alpha 1_C) and asks for multinomial(|D_k|, pi_k)
    examples of each class. Where a class has fewer examples than asked for in total, every
    UE's request for it is scaled down in proportion, so |D_k| can come out below ``sizes[k]``.
    Returns K index arrays into ``labels``.
    """
    labels = np.asarray(labels)
    sizes = np.asarray(sizes, dtype=int)
    if alpha <= 0:
        raise ConfigError(f"alpha_dir: must be > 0, got {alpha:g}")
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    pi = rng.dirichlet(np.full(classes.size, alpha), size=sizes.size)  # (K, C)
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(sizes, pi)])  # (K, C)
    for c, pool in enumerate(pools):
        demand = counts[:, c].sum()
        if demand > pool.size:
            counts[:, c] = np.floor(counts[:, c] * (pool.size / demand)).astype(int)
    out = []
    start = np.zeros(classes.size, dtype=int)
    for k in range(sizes.size):
        idx = []
        for c, pool in enumerate(pools):
            idx.append(pool[start[c]: start[c] + counts[k, c]])
            start[c] += counts[k, c]
        part = rng.permutation(np.concatenate(idx))
        if part.size == 0:
            raise ConfigError(f"data: UE {k} got no training examples; lower K or data_min")
        out.append(part)
    return out
