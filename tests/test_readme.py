"""The README's 'Use as a library' example runs as is and tunes the learning rate."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- library-example -->"
SEEDS_MARKER = "<!-- library-example-seeds -->"


def library_example(marker: str = MARKER) -> str:
    """The ```python block right after the marker comment in README.md."""
    text = (REPO / "README.md").read_text()
    assert text.count(marker) == 1, f"README.md must hold exactly one {marker} marker"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(marker, 1)[1], re.S)
    assert match, "the marker must be followed by a ```python block"
    return match.group(1)


def test_readme_library_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(library_example() + "\n\n" + library_example(SEEDS_MARKER))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("step")]
    assert len(rows) == 20  # T / tau windows
    val = [float(re.search(r"val loss (\S+)", r).group(1)) for r in rows]
    lrs = [float(re.search(r" lr (\S+)", r).group(1)) for r in rows]
    assert lrs[0] == 0.01 and len(set(lrs)) > 1  # the learning rate is being tuned
    assert val[-1] < 0.5 * val[0]  # and the model learns
    learned = float(re.search(r"learned lr: (\S+)", res.stdout).group(1))
    assert learned != 0.01 and abs(learned - lrs[-1]) < 0.01

    per_seed = [float(v) for v in re.findall(r"[0-9.]+", res.stdout.split("learned lr per seed:")[1])]
    assert len(per_seed) == 3 and abs(per_seed[0] - learned) < 1e-3  # seed 0 of the group: the run above
    assert len(set(per_seed)) > 1  # the seeds differ
