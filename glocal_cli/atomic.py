"""Atomic file output: write to a temporary file in the target folder, then rename.

An interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Raise a one-line ``UserError`` unless ``path`` is, or can be created as, a writable folder.

    Writes nothing: checks the path itself (a folder, or absent) and its nearest
    existing ancestor (a writable folder).
    """
    from glocal_cli.errors import UserError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {path}: exists and is not a folder")
    ancestor = p if p.exists() else None
    if ancestor is None:
        for parent in p.absolute().parents:
            if parent.exists():
                ancestor = parent
                break
    if ancestor is None or not ancestor.is_dir():
        raise UserError(f"{option} {path}: cannot create a folder there ({ancestor} is not a folder)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {ancestor} is not writable")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (non-finite floats become null)."""
    write_text(path, json.dumps(plain(obj, nan_as_none=True), indent=2, sort_keys=True) + "\n")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write arrays to an uncompressed ``.npz`` file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def plain(obj: Any, nan_as_none: bool = False) -> Any:
    """A JSON-ready copy of ``obj``: NumPy scalars become Python numbers, tuples lists,
    dict keys strings; with ``nan_as_none`` non-finite floats become None."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return None if nan_as_none and not np.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): plain(v, nan_as_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, nan_as_none) for v in obj]
    return obj
