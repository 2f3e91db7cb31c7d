"""Checkpoints of a training run: format, write, load, check, remove.

A checkpoint is two files in the run folder, written without pickle:

* ``checkpoint.<outer step>.npz``: the :class:`~glocal_cli.hpo.HPOState` arrays (inner
  state, φ, outer-optimizer state, the method's ``aux``), the DMD eigenvalues and the
  recorded hypergradients so far; read with ``allow_pickle=False``;
* ``checkpoint.json``: the manifest: format, the run's config, its resolved runtime
  (:class:`~glocal_cli.runtime.Runtime`), the outer step, the history rows so far, the
  arrays file's name and sha256.

A run started again with the same config resumes from it and ends with the same result
as an uninterrupted run. A checkpoint of another config is not used (the run starts
from window 0, saying why); one written under other resolved numerics (e.g. on a CPU,
resumed on a GPU) is refused with a one-line error: resuming it would silently mix two
numerics in one run. No pickle is ever read; a ``checkpoint.pkl`` of an older version
is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import List, Optional

import jax
import numpy as np

from glocal_cli import atomic
from glocal_cli.errors import UserError
from glocal_cli.hpo import HPOState
from glocal_cli.runtime import Runtime

CHECKPOINT = "checkpoint.json"  # manifest; the arrays are in checkpoint.<outer step>.npz
CHECKPOINT_FORMAT = 2  # 2: the method's aux state among the arrays, the resolved runtime in the manifest
LEGACY_CHECKPOINT = "checkpoint.pkl"  # pickle checkpoints of older versions: never opened


def comparable_config(cfg_dict: dict) -> dict:
    """A config dict with ``data_dir`` and ``out`` as absolute normalised paths.

    Two invocations of the same run (``--out runs/a`` and ``--out $PWD/runs/a``)
    compare equal.
    """
    d = dict(cfg_dict)
    for key in ("data_dir", "out"):
        if d.get(key):
            d[key] = os.path.normpath(os.path.abspath(str(d[key])))
    return d


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """``saved`` with the settings it lacks (added since it was written) at their defaults, nested sections too.

    A setting introduced after a checkpoint was written did not exist for that run,
    so the run had its default behaviour; the checkpoint stays usable when the new
    setting is left at its default, and is rejected when it is not.
    """
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state_tree(hs: HPOState) -> tuple:
    """The arrays of an :class:`HPOState`: all but ``outer_step`` (a Python int)."""
    return hs.inner, hs.phi, hs.outer, hs.aux


def _state_leaves(hs: HPOState) -> list:
    return jax.tree_util.tree_leaves(_state_tree(hs))


def save_checkpoint(run_dir: Path, hs: HPOState, cfg, runtime: Runtime, rows: List[dict], eigs: List[np.ndarray],
                    hypergrads: List[np.ndarray], seconds: float, group: Optional[dict] = None) -> None:
    """Write a checkpoint without pickle: arrays in ``checkpoint.<step>.npz``, the rest in ``checkpoint.json``.

    The arrays file is written first under a new name; the JSON manifest (config,
    outer step, history rows, the arrays file's name and sha256) is then replaced
    atomically, and older arrays files are removed. A kill at any point leaves
    either the previous or the new checkpoint, never a mixed one.
    """
    arrays = {f"state_{i:04d}": np.asarray(x) for i, x in enumerate(jax.device_get(_state_leaves(hs)))}
    arrays.update({f"eig_{i:06d}": np.asarray(e) for i, e in enumerate(eigs)})
    arrays.update({f"hg_{i:06d}": np.asarray(h) for i, h in enumerate(hypergrads)})
    name = f"checkpoint.{int(hs.outer_step)}.npz"
    atomic.save_npz(run_dir / name, **arrays)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "config": comparable_config(cfg.to_dict()),
        "runtime": runtime.to_dict(),
        "outer_step": int(hs.outer_step),
        "arrays": name,
        "sha256": _sha256(run_dir / name),
        "n_state": len(_state_leaves(hs)),
        "n_eigs": len(eigs),
        "n_hypergrads": len(hypergrads),
        "rows": atomic.plain(rows),
        "seconds": float(seconds),
        "group": atomic.plain(group or {}),
    }
    atomic.write_text(run_dir / CHECKPOINT, json.dumps(manifest))
    for old in run_dir.glob("checkpoint.*.npz"):
        if old.name != name:
            old.unlink()


def remove_checkpoint(run_dir: Path) -> None:
    """Delete the manifest and every arrays file of a finished run."""
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    for old in run_dir.glob("checkpoint.*.npz"):
        old.unlink()


class CheckpointRejected(Exception):
    """A checkpoint present but not usable (the run starts from window 0); the message says why in one line."""


class CheckpointRefused(UserError):
    """A checkpoint written under other resolved numerics: the run stops (exit 2) rather than mix them."""


def load_checkpoint(run_dir: Path, cfg, runtime: Runtime, template: HPOState) -> Optional[dict]:
    """The checkpoint of ``run_dir`` for ``cfg``, or None when there is none.

    Nothing in the files chooses a type: the arrays are read with
    ``allow_pickle=False`` after their sha256 is checked against the manifest,
    and poured into the tree structure of ``template`` (``runner.init(phi0)``),
    leaf by leaf with matching shape and dtype. Raises :class:`CheckpointRejected`
    (one line) when the checkpoint is corrupt, of an older format or was written by
    another config, and :class:`CheckpointRefused` (a :class:`UserError`) when it was
    written under another resolved ``runtime``.
    """
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), int):
            raise ValueError("unknown format")
        if manifest["format"] != CHECKPOINT_FORMAT:
            raise CheckpointRejected(f"{path} has format {manifest['format']} of another glocal version "
                                     f"(this one reads {CHECKPOINT_FORMAT})")
        saved_cfg, saved_runtime = manifest["config"], manifest["runtime"]
        if not isinstance(saved_cfg, dict) or not isinstance(saved_runtime, dict):
            raise ValueError("config or runtime is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointRejected(f"{path} is corrupt ({type(e).__name__}: {str(e)[:80]})") from None
    current = comparable_config(cfg.to_dict())
    saved_cfg = _with_defaults(saved_cfg, type(cfg)().to_dict())
    differ = sorted(k for k in set(current) | set(saved_cfg) if current.get(k) != saved_cfg.get(k))
    if differ:
        raise CheckpointRejected(f"{path} was written by another config (differs in: {', '.join(differ)})")
    numerics = runtime.differences(saved_runtime)
    if numerics:
        raise CheckpointRefused(
            f"{path} was written under other numerics ({'; '.join(numerics)}); resume it on a machine where they "
            "resolve the same, or start over in another --out")
    try:
        name = str(manifest["arrays"])
        if not re.fullmatch(r"checkpoint\.\d+\.npz", name):
            raise ValueError(f"bad arrays file name {name!r}")
        npz = run_dir / name
        if _sha256(npz) != manifest["sha256"]:
            raise ValueError(f"sha256 of {name} does not match the manifest")
        leaves, treedef = jax.tree_util.tree_flatten(_state_tree(template))
        n_state, n_eigs, n_hg = int(manifest["n_state"]), int(manifest["n_eigs"]), int(manifest["n_hypergrads"])
        if n_state != len(leaves):
            raise ValueError(f"{n_state} state arrays, the model has {len(leaves)}")
        with np.load(npz, allow_pickle=False) as z:
            restored = []
            for i, ref in enumerate(leaves):
                a = z[f"state_{i:04d}"]
                ref = np.asarray(ref)
                if a.shape != ref.shape or a.dtype != ref.dtype:
                    raise ValueError(f"state array {i}: {a.dtype}{list(a.shape)}, expected {ref.dtype}{list(ref.shape)}")
                restored.append(a)
            eigs = [z[f"eig_{i:06d}"] for i in range(n_eigs)]
            hypergrads = [z[f"hg_{i:06d}"] for i in range(n_hg)]
        outer_step = int(manifest["outer_step"])
        rows = manifest["rows"]
        seconds = float(manifest["seconds"])
        group = manifest.get("group", {})
        if not isinstance(group, dict):
            raise ValueError("group is not a mapping")
        if not isinstance(rows, list) or len(rows) != outer_step or outer_step < 1:
            raise ValueError("history rows do not match the outer step")
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointRejected(f"{path} is corrupt ({type(e).__name__}: {str(e)[:80]})") from None
    inner, phi, outer, aux = jax.tree_util.tree_unflatten(treedef, [jax.device_put(a) for a in restored])
    hs = HPOState(inner, phi, outer, outer_step, aux)
    return {"hpo_state": hs, "rows": rows, "eigs": eigs, "hypergrads": hypergrads, "seconds": seconds,
            "group": group}
