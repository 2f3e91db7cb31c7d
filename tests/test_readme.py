"""The library example (docs/library.md, linked from the README) runs as is, tunes the learning rate, and measures what the page says.

The page's sentence on its result is generated (``glocal_cli.report.published.library_example``) from
``docs/records/library_example.json``, which this test writes when ``GLOCAL_WRITE_RECORDS=1``::

    GLOCAL_WRITE_RECORDS=1 python -m pytest -q -n0 tests/test_readme.py && python -m glocal_cli.report.published

and otherwise checks against what it measures now, rounded as the README prints it.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from glocal_cli import provenance
from glocal_cli.report import published
from glocal_cli.windows import KINDS

REPO = Path(__file__).resolve().parents[1]
PAGE = "docs/library.md"  # the library example's page (the README links to it)
MARKER = "<!-- library-example -->"
SEEDS_MARKER = "<!-- library-example-seeds -->"
RECORD = REPO / "docs" / "records" / "library_example.json"


def library_example(marker: str = MARKER) -> str:
    """The ```python block right after the marker comment in README.md."""
    text = (REPO / PAGE).read_text()
    assert text.count(marker) == 1, f"{PAGE} must hold exactly one {marker} marker"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(marker, 1)[1], re.S)
    assert match, "the marker must be followed by a ```python block"
    return match.group(1)


def printed(m: dict) -> dict:
    """What the README prints of a measurement (published.library_example's rounding)."""
    return {"lr_first": published.num(m["lr_first"], 2), "lr_last": published.num(m["lr_last"], 2),
            "val_loss_first": published.num(m["val_loss_first"], 2),
            "val_loss_last": published.num(m["val_loss_last"], 2), "n_windows": m["n_windows"], "windows": m["windows"]}


def test_readme_library_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(library_example() + "\n\n" + library_example(SEEDS_MARKER))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    wall = time.perf_counter() - start
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("step")]
    assert len(rows) == 20  # T / tau windows
    val = [float(re.search(r"val loss (\S+)", r).group(1)) for r in rows]
    lrs = [float(re.search(r" lr (\S+)", r).group(1)) for r in rows]
    how = [re.search(r"\((\w+)\)$", r).group(1) for r in rows]
    assert lrs[0] == 0.01 and len(set(lrs)) > 1  # the learning rate is being tuned
    assert val[-1] < 0.5 * val[0]  # and the model learns
    assert set(how) <= set(KINDS)
    learned = float(re.search(r"learned lr: (\S+)", res.stdout).group(1))
    assert learned != 0.01 and abs(learned - lrs[-1]) < 0.01

    per_seed = [float(v) for v in re.findall(r"[0-9.]+", res.stdout.split("learned lr per seed:")[1])]
    assert len(per_seed) == 3 and abs(per_seed[0] - learned) < 1e-3  # seed 0 of the group: the run above
    assert len(set(per_seed)) > 1  # the seeds differ

    measured = {"lr_first": lrs[0], "lr_last": learned, "val_loss_first": val[0], "val_loss_last": val[-1],
                "n_windows": len(rows), "windows": {k: how.count(k) for k in KINDS}, "wall_s": wall}
    if os.environ.get("GLOCAL_WRITE_RECORDS") == "1":
        prov = provenance.collect()
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps({
            "record": "library_example", "what": "the README's library example (its two code blocks), as "
            "tests/test_readme.py runs and measures it; wall_s: the whole script (imports, the single run and "
            "the three-seed group)", "command": "GLOCAL_WRITE_RECORDS=1 python -m pytest -q -n0 tests/test_readme.py",
            "date": time.strftime("%Y-%m-%d"), "device": f"{prov['device_kind']} ({os.cpu_count()} cores)",
            "load_average_1min": round(os.getloadavg()[0], 1), "provenance": prov, "measured": measured}, indent=1) + "\n")
    record = json.loads(RECORD.read_text())
    assert printed(measured) == printed(record["measured"]), (
        "the README's library-example numbers differ from what the example measures now: rerun with "
        "GLOCAL_WRITE_RECORDS=1 and regenerate (python -m glocal_cli.report.published)")
