"""glocal_cli.windows: each window counted by how its hypergradient estimate was made."""

import csv
import io

import pytest

from glocal_cli.history import rows_to_csv
from glocal_cli.windows import KINDS, describe, estimate_counts


def _row(estimator="glocal", selection="tol", fallback=0):
    return {"outer_step": 1, "estimator": estimator, "dmd_selection": selection, "dmd_fallback": fallback}


ROWS = [_row(), _row(), _row(selection="nearest"), _row(selection="", fallback=1), _row(selection="all"),
        _row(estimator="mean", selection=""), _row(estimator="", selection="", fallback="")]


def test_counts_every_kind_and_skips_rows_without_an_estimate():
    counts = estimate_counts(ROWS)
    assert list(counts) == list(KINDS)
    assert counts == {"tol": 2, "nearest": 1, "empty": 0, "all": 1, "fallback": 1, "not_dmd": 1}
    assert estimate_counts([]) == dict.fromkeys(KINDS, 0)


def test_history_csv_strings_count_as_the_rows_did():
    """history.csv as csv.DictReader reads it back (every cell a string, blanks "") gives the same split."""
    read = list(csv.DictReader(io.StringIO(rows_to_csv(ROWS))))
    assert read[3]["dmd_fallback"] == "1" and read[6]["dmd_fallback"] == ""
    assert estimate_counts(read) == estimate_counts(ROWS)


def test_a_fallback_row_counts_as_fallback_whatever_its_selection():
    assert estimate_counts([_row(selection="tol", fallback="1")])["fallback"] == 1
    assert estimate_counts([_row(selection="tol", fallback="0")])["tol"] == 1


def test_unknown_selection_is_an_error():
    with pytest.raises(ValueError, match="unknown dmd_selection 'weird'"):
        estimate_counts([_row(selection="weird")])


def test_describe_names_the_non_zero_kinds():
    assert describe(estimate_counts(ROWS)) == ("2 within tol of 1, 1 nearest eigenvalue, 1 all modes (horizon), "
                                               "1 fallback to local, 1 no DMD")
    assert describe(estimate_counts([])) == "no window"
