"""``history.csv``: one row a window of a run (its schema in :func:`history_row`)."""

from __future__ import annotations

import csv
import io
import math
from typing import Dict, List, Optional

import numpy as np

from glocal_cli.methods import WindowRecord

MAX_COMPONENTS = 8  # per-component history columns up to this many hyperparameters


def history_row(rec: WindowRecord, hyperparams: Dict[str, float], test_acc: Optional[float]) -> dict:
    """A flat dict for ``history.csv`` from a window record."""
    q = rec.phi.shape[0]
    row = {"outer_step": rec.outer_step, "step": rec.step, "val_loss": rec.val_loss}
    row.update({k: v for k, v in hyperparams.items()})
    if q <= MAX_COMPONENTS:
        for i in range(q):
            row[f"phi_{i}"] = float(rec.phi[i])
            row[f"h_local_{i}"] = float(rec.hypergrad_local[i])
            row[f"h_used_{i}"] = float(rec.hypergrad_used[i])
    row["h_local_norm"] = float(np.linalg.norm(rec.hypergrad_local))
    row["h_used_norm"] = float(np.linalg.norm(rec.hypergrad_used))
    row["test_accuracy"] = "" if test_acc is None else test_acc
    d = rec.dmd
    row["estimator"] = "" if d is None else d.estimator
    row["dmd_selected"] = "" if d is None else format_eigenvalues(d.selected)
    row["dmd_n_selected"] = "" if d is None else d.n_selected
    row["dmd_n_unit"] = row["dmd_n_selected"]  # the former name, read by older reports
    row["dmd_selection"] = "" if d is None else d.selection
    row["dmd_spectral_radius"] = "" if d is None or not math.isfinite(d.spectral_radius) else d.spectral_radius
    row["dmd_rank"] = "" if d is None else d.rank
    row["dmd_residual"] = "" if d is None or not math.isfinite(d.residual) else d.residual
    row["dmd_imag_norm"] = "" if d is None else d.imag_norm
    row["dmd_fallback"] = "" if d is None else int(d.fallback)
    row["dmd_reason"] = "" if d is None else d.reason
    row["seconds"] = rec.seconds
    return row


def format_eigenvalues(eigs: np.ndarray) -> str:
    """``[k]`` complex eigenvalues as ``"0.98+0.01j;0.98-0.01j"`` (6 significant digits), ``""`` when empty."""
    return ";".join(f"{complex(z).real:.6g}{complex(z).imag:+.6g}j" for z in np.asarray(eigs).ravel())


def rows_to_csv(rows: List[dict]) -> str:
    """CSV text with the union of the rows' keys (first-seen order)."""
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
