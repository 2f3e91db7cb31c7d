"""The lock file ``uv.lock`` and ``pyproject.toml`` agree (a dependency changed without `uv lock` fails here).

Two checks: the project's requirements as the lock recorded them equal those of
``pyproject.toml`` (pure Python, always runs), and, where uv is installed (as
``.ci/run`` and the README install it), ``uv lock --check --offline``: uv's own
verdict that the lock is up to date, without a network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _from_pyproject() -> set:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [(Requirement(r), None) for r in project["dependencies"]]
    reqs += [(Requirement(r), extra) for extra, rs in project.get("optional-dependencies", {}).items() for r in rs]
    out = set()
    for r, extra in reqs:
        marker = f"extra == '{extra}'" if extra else (str(r.marker) if r.marker else None)
        out.add((canonicalize_name(r.name), tuple(sorted(r.extras)), str(r.specifier) or None, marker))
    return out


def _from_lock() -> set:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (project,) = [p for p in lock["package"] if p.get("source", {}).get("editable") == "."]
    return {(canonicalize_name(r["name"]), tuple(sorted(r.get("extras", ()))), r.get("specifier"), r.get("marker"))
            for r in project["metadata"]["requires-dist"]}


def test_lock_records_the_requirements_of_pyproject():
    declared, locked = _from_pyproject(), _from_lock()
    assert declared == locked, (
        f"pyproject.toml and uv.lock disagree (run `uv lock`): only in pyproject {sorted(declared - locked)}, "
        f"only in uv.lock {sorted(locked - declared)}")


def test_lock_pins_every_package_to_one_version_with_hashes():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock["requires-python"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    for pkg in lock["package"]:
        if pkg.get("source", {}).get("registry"):
            assert pkg["version"], pkg["name"]
            files = pkg.get("wheels", []) + ([pkg["sdist"]] if "sdist" in pkg else [])
            assert files and all(f.get("hash", "").startswith("sha256:") for f in files), pkg["name"]


def _uv():
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def test_uv_says_the_lock_is_up_to_date():
    uv = _uv()
    if uv is None:
        pytest.skip("uv not installed (the README's install command installs it)")
    res = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
