"""How each window's hypergradient was made: a count per kind over a run's history rows.

A glocal window's estimate comes from one of (``history.csv`` columns ``dmd_selection`` and
``dmd_fallback``, written by :func:`glocal_cli.train.history_row`):

* ``tol``: the DMD eigenvalues within ``dmd_tol`` of 1 were summed (the paper's Eq. 20);
* ``nearest``: none was within ``dmd_tol``; the eigenvalue(s) nearest 1 were summed (``if_empty = nearest``);
* ``empty``: none was within ``dmd_tol``; the literal empty sum 0 (``if_empty = zero``);
* ``all``: every mode, extrapolated to T (``glocal-horizon``);
* ``fallback``: the estimator gave up (a fallback reason) and the local hypergradient was used;
* ``not_dmd``: an estimator without a DMD (``mean``, ``local``).

Rows without an estimate (methods ``none``, ``local``, ``global``, ``sgld``) are not counted.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping

#: The kinds, in the order tables print them.
KINDS = ("tol", "nearest", "empty", "all", "fallback", "not_dmd")


def _flag(value) -> bool:
    """A ``dmd_fallback`` cell as a bool: ``1`` / ``"1"`` / ``"1.0"`` / ``True`` are set; blank is not."""
    if value is None or value == "":
        return False
    try:
        return float(value) == 1.0
    except (TypeError, ValueError):
        return str(value).strip().lower() == "true"


def estimate_counts(rows: Iterable[Mapping]) -> Dict[str, int]:
    """``{kind: windows}`` for every kind of :data:`KINDS` (zeros included) over history rows.

    ``rows``: dicts with the history columns ``estimator``, ``dmd_selection`` and ``dmd_fallback``, as
    :func:`glocal_cli.train.history_row` builds them or as ``csv.DictReader`` reads ``history.csv``
    (strings). A row whose ``dmd_fallback`` is 1 counts as ``fallback`` whatever its selection; a row
    with an estimator but no selection as ``not_dmd``; a row without an estimator is not counted.
    A selection outside :data:`KINDS` raises ``ValueError``.
    """
    counts = dict.fromkeys(KINDS, 0)
    for row in rows:
        selection = str(row.get("dmd_selection") or "").strip()
        if _flag(row.get("dmd_fallback")):
            kind = "fallback"
        elif selection:
            kind = selection
        elif str(row.get("estimator") or "").strip():
            kind = "not_dmd"
        else:
            continue
        if kind not in counts:
            raise ValueError(f"unknown dmd_selection {selection!r} (known: {', '.join(KINDS)})")
        counts[kind] += 1
    return counts


def describe(counts: Mapping[str, int]) -> str:
    """``"124 within tol of 1, 26 nearest eigenvalue"``: the non-zero kinds in words (``"no window"`` if none)."""
    words = {"tol": "within tol of 1", "nearest": "nearest eigenvalue", "empty": "empty sum (0)",
             "all": "all modes (horizon)", "fallback": "fallback to local", "not_dmd": "no DMD"}
    parts = [f"{counts[k]} {words[k]}" for k in KINDS if counts.get(k)]
    return ", ".join(parts) if parts else "no window"
