"""Where a result came from: package versions, the JAX backend and device, the git commit.

Every result file (a run's ``metrics.json``, ``glocal bench``'s and ``glocal verify``'s
JSON) carries :func:`collect`'s dict under ``provenance``, so a number can be traced to
the software stack and the code version that produced it (``glocal --version`` prints
the same). The lock file ``uv.lock`` pins the stack; this records what actually ran.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

#: The distributions whose versions every result records (``None`` where not installed).
PACKAGES = ("glocal-cli", "jax", "jaxlib", "flax", "optax", "numpy")

#: What counts as code for the ``dirty`` flag (git pathspecs, relative to the checkout's root).
CODE_PATHS = ("glocal_cli", "stages", "scripts", "pyproject.toml", "uv.lock")

#: Set to a commit id where the code does not sit in a git checkout (e.g. a copied tree on a cluster).
COMMIT_ENV = "GLOCAL_GIT_COMMIT"


def package_versions() -> Dict[str, Optional[str]]:
    """``{distribution: version or None}`` for :data:`PACKAGES`, and ``python``."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(args, cwd: Path) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def git_state(where: Optional[str] = None) -> Dict[str, object]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding this package.

    ``dirty``: the code differs from the commit: a tracked file among :data:`CODE_PATHS`
    is modified (``dvc.lock``, params and results are not code: the run's settings are
    recorded beside its results, and ``dvc repro`` rewrites ``dvc.lock`` as it goes).
    Outside a git checkout both are None, unless ``$GLOCAL_GIT_COMMIT`` names the
    commit (``dirty`` then stays None).
    """
    root = Path(where) if where else Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], root)
    if commit is None:
        return {"commit": os.environ.get(COMMIT_ENV) or None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS], root)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_info() -> Dict[str, object]:
    """The default JAX backend, its first device's kind and the number of local devices."""
    import jax

    devices = jax.local_devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices)}


def collect(with_devices: bool = True) -> Dict[str, object]:
    """Everything above as one JSON-ready dict (``with_devices=False`` does not initialize JAX)."""
    out: Dict[str, object] = {**package_versions(), **git_state()}
    if with_devices:
        out.update(device_info())
    return out


def version_text() -> str:
    """``glocal --version``: the package version, then one ``name value`` line per item of :func:`collect`."""
    info = collect()
    lines = [f"glocal {info.pop('glocal-cli') or 'unknown'}"]
    width = max(len(k) for k in info)
    lines += [f"  {k:<{width}}  {v}" for k, v in info.items()]
    return "\n".join(lines)
