"""Every published table and number of README.md and docs/*.md is what its committed record gives.

The drift check (``python -m glocal_cli.report.published --check``: cog --check over the pages) runs
on the repository, and on a copy whose record was changed in one value, where it must fail.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import cogapp  # noqa: F401  (a test dependency: a missing cog fails here, never skips the drift test)
import pytest

from glocal_cli.errors import UserError
from glocal_cli.report import published, records

REPO = Path(__file__).resolve().parents[1]


def _copy_pages(tmp_path: Path) -> Path:
    """README.md, docs/*.md and the records (docs/*.json, everything under docs/records: the near-one table reads
    runs' dmd.npz and history.csv there) copied to ``tmp_path/repo``."""
    root = tmp_path / "repo"
    (root / "docs" / "records").mkdir(parents=True)
    shutil.copy2(REPO / "README.md", root / "README.md")
    for pattern in ("docs/*.md", "docs/*.json", "docs/records/**/*"):
        for path in REPO.glob(pattern):
            if path.is_file():
                (root / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, root / path.relative_to(REPO))
    return root


def test_published_pages_match_their_records(capsys):
    """The drift test: regenerating README.md and docs/*.md from the committed records changes nothing
    (on failure the diff is printed: run `python -m glocal_cli.report.published` and commit)."""
    status = published.run_cog(published.FILES, check=True)
    assert status == 0, capsys.readouterr().out[-4000:]


@pytest.mark.parametrize("record, change", [
    # the baselines record (summaries): prodigy's paired difference, as the README's table prints it
    ("docs/baselines_cpu.json", lambda r: r["numbers"].__setitem__(
        "baselines/fashion_mnist/prodigy/diff_vs_glocal_mean", 0.2)),
    # the evidence record (every seed's values): one seed of glocal at T = 200
    ("docs/records/evidence_cpu.json", lambda r: r["variants"]["glocal"]["test_accuracy"].__setitem__(
        0, r["variants"]["glocal"]["test_accuracy"][0] + 0.01)),
    # the verify record: local's median relative error at lr0 1e-3
    ("docs/verify_cpu.json", lambda r: r["summary"]["mlp/fashion_mnist/lr0=0.001"]["estimators"]["local"].__setitem__(
        "rel_err_median", 0.5)),
    # the library example's measurement
    ("docs/records/library_example.json", lambda r: r["measured"].__setitem__("val_loss_last", 0.25)),
    # a per-seed table (docs/results.md): one seed's accuracy moves its mean ± std row
    ("docs/records/results_h100_3seeds.json", lambda r: r["variants"]["local"]["test_accuracy"].__setitem__(1, 0.86)),
    # docs/sgld.md's re-run cell and z table, docs/method.md's sentence: one seed of glocal, one of persistent-z sgld
    ("docs/records/lt_fmnist50.json", lambda r: r["variants"]["glocal"]["test_accuracy"].__setitem__(0, 0.5)),
    ("docs/records/lt_fmnist50.json", lambda r: r["variants"]["sgld-persist-z"]["val_loss"].__setitem__(0, 2.0)),
    # docs/sgld.md's collapse detection: the default run's test accuracy
    ("docs/records/collapse_probe.json", lambda r: r["runs"]["default"].__setitem__("test_accuracy", 0.5)),
    # docs/method.md's eigenvalue table: the campaign row without its seed 2
    ("docs/records/near_one.json", lambda r: r["rows"][0].update(runs=["paper_scale_cpu/glocal/seed[01]"])),  # a seed fewer
])
def test_a_changed_record_fails_the_check(tmp_path, capsys, record, change):
    """Change one value in a copy of a record: the check of the copied pages fails (exit 5) and shows the line."""
    root = _copy_pages(tmp_path)
    assert published.run_cog(published.FILES, check=True, root=root) == 0  # the copy itself is clean
    path = root / record
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec, indent=1, ensure_ascii=False))
    capsys.readouterr()
    assert published.run_cog(published.FILES, check=True, root=root) == 5
    diff = capsys.readouterr().out
    assert "\n-" in diff and "\n+" in diff  # cog --diff shows the published line and what the record now gives
    # regenerating makes the copy agree again, with the changed number in it
    assert published.run_cog(published.FILES, root=root) == 0
    assert published.run_cog(published.FILES, check=True, root=root) == 0


def test_the_readme_results_are_all_generated():
    """In the README's result sections every table line and number-bearing sentence lies in a generated block,
    except the paper-scale row and sentence (another record's, not generated yet; marked by their end marker)."""
    text = (REPO / "README.md").read_text()
    inside = False
    sections = ("## Does it work?", "## What should I use?")
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line if line in sections else None
        if "[[[cog" in line:
            inside = True
            continue
        if "[[[end]]]" in line:
            inside = False
            assert "paper's scale" in line or line.strip() == "<!-- [[[end]]] -->", line
            continue
        if section and line.startswith("|"):
            assert inside, f"a table line outside a generated block: {line[:80]}"


def test_missing_or_bad_record_is_one_line_exit_2(tmp_path, capsys):
    root = _copy_pages(tmp_path)
    (root / "docs" / "baselines_cpu.json").unlink()
    with pytest.raises(UserError, match=r"record .*baselines_cpu.json: cannot read"):
        published.run_cog(["docs/baselines.md"], check=True, root=root)
    (root / "docs" / "baselines_cpu.json").write_text("{oops")
    with pytest.raises(UserError, match="not JSON"):
        published.run_cog(["docs/baselines.md"], check=True, root=root)
    assert published.main(["--check", "no/such/page.md"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no such file")


def test_records_state_what_their_pm_means():
    """Each committed record says what its ± means (the README's convention); the evidence record has every
    seed's values, each run's commit, and the split of glocal's windows by how the estimate was made."""
    for path in ("docs/baselines_cpu.json", "docs/records/evidence_cpu.json"):
        rec = records.load(REPO / path)
        assert "ddof 1" in rec["pm"]["over_seeds"] and "√n" in rec["pm"]["paired"], path
    ev = records.load(REPO / "docs/records/evidence_cpu.json", "evidence")
    for name, v in ev["variants"].items():
        n = len(v["seeds"])
        assert n == 5 and all(len(v[k]) == n for k in ("status", "test_accuracy", "final_lr", "commit")), name
        assert all(c and not d for c, d in zip(v["commit"], v["dirty"])), name  # clean, recorded commits
    split = ev["variants"]["glocal"]["dmd_windows"]
    assert sum(sum(split[k]) for k in split) == sum(ev["variants"]["glocal"]["outer_steps"])


def test_statistics_follow_the_convention():
    assert records.mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 3)), 3)
    mean, se, n = records.paired({0: 1.0, 1: 2.0, 2: 4.0, 3: 9.0}, {0: 0.5, 1: 1.0, 2: 1.0, 5: 0.0})
    d = [0.5, 1.0, 3.0]
    assert (mean, n) == (pytest.approx(1.5), 3)
    assert se == pytest.approx(math.sqrt(sum((x - 1.5) ** 2 for x in d) / 2) / math.sqrt(3))
    assert math.isnan(records.mean_std([0.3])[1]) and records.mean_std([None, float("nan")])[2] == 0


def test_a_population_std_record_is_printed_as_the_sample_std():
    """The baselines record kept the report's ddof-0 std; the pages print std × √(n/(n−1)) (exact)."""
    xs = [0.30, 0.35, 0.42, 0.28, 0.33]
    mean = sum(xs) / 5
    pop = math.sqrt(sum((x - mean) ** 2 for x in xs) / 5)
    rec = {"record": "baselines", "setting": {"dataset": "d"}, "pm": {"stored_std_ddof": 0},
           "numbers": {"baselines/d/none/test_accuracy_mean": mean, "baselines/d/none/test_accuracy_std": pop,
                       "baselines/d/none/n": 5}}
    row = published.rows(rec)["none"]
    assert row.std == pytest.approx(records.mean_std(xs)[1], rel=1e-12)
    rec["pm"]["stored_std_ddof"] = 1
    assert published.rows(rec)["none"].std == pytest.approx(pop)


def test_numbers_print_as_the_pages_do():
    assert published.pm(0.16949, 0.00404, 3, sign=True) == "+0.169 ± 0.004"
    assert published.signed(-0.00068, 4) == "\u22120.0007" and published.thousands(3792.23) == "3 792"
    assert published.pm(0.7, math.nan, 3) == "0.700" and published.num(math.nan, 2) == "–"
    assert re.fullmatch(r"\| a \| b \|\n\|---\|---:\|\n\| 1 \| 2 \|",
                        published.table(["a", "b"], [["1", "2"]], ["---", "---:"]))


def test_a_row_pattern_names_run_folders_only(tmp_path):
    """The near-one table's campaign row (``paper_scale_cpu/glocal/seed*``) reads every seed folder the campaign
    has committed, not the variant's seeds.json beside them (which the same pattern matches)."""
    from glocal_cli.report.published_docs import _run_folders

    for name in ("seed0", "seed1", "seed12"):
        (tmp_path / "glocal" / name).mkdir(parents=True)
    (tmp_path / "glocal" / "seeds.json").write_text("{}")
    got = _run_folders(tmp_path, {"runs": ["glocal/seed*", "glocal/seed0"]})
    assert got == [tmp_path / "glocal" / n for n in ("seed0", "seed1", "seed12", "seed0")]
