"""Every package folder ships under the fedopt namespace (pyproject lists them explicitly)."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for top, name in (("fedopt", "fedopt"), ("models", "fedopt.models"), ("solvers", "fedopt.solvers")):
        assert mapping[name] == top
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"pyproject packages differ: missing {found - listed}, extra {listed - found}"
    assert "models" not in listed and "solvers" not in listed  # never a bare top-level package
