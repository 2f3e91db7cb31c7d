"""The command line as Typer/Click users expect it, and the package's house rules.

Choices from the config spine (a typo names the allowed values), help in panels,
``glocal --version``, a one-line warning for an explicit setting the run ignores,
and no import circle inside the package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from glocal_cli import cli, provenance, settings
from glocal_cli.config import LEAVES, TrainConfig, from_mapping, ignored_settings
from glocal_cli.params import given_in_file

ROOT = Path(__file__).resolve().parents[1]




def test_a_typo_in_a_choice_lists_the_allowed_values(run_cli):
    code, _, err = run_cli(["train", "--method", "glocl"])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and "'glocl' is not one of" in err[0]
    for method in ("none", "local", "glocal", "global", "sgld"):
        assert f"'{method}'" in err[0]


def test_every_enumerated_setting_is_a_choice_the_shell_completes():
    """Shell completion offers exactly the spine's choices of every enumerated setting."""
    from typer.main import get_command

    command = get_command(cli.app).commands["train"]
    ctx = command.make_context("train", [], resilient_parsing=True)
    by_name = {p.name: p for p in command.params}
    enumerated = {name: f.metadata[settings.CHOICES] for name, (_, f) in LEAVES.items() if settings.CHOICES in f.metadata}
    assert {"method", "estimator", "task", "model", "conv_impl", "outer_optimizer", "grad_mode", "val_grad",
            "dataset"} <= set(enumerated)
    for name, choices in enumerated.items():
        # (as sets: typing caches Literal types by their set of values, so the order may be another's)
        assert {item.value for item in by_name[name].shell_complete(ctx, "")} == set(choices), name
    assert [item.value for item in by_name["method"].shell_complete(ctx, "gl")] == ["glocal", "global"]


def test_choices_are_validated_once_in_the_config():
    with pytest.raises(ValueError, match="--estimator 'koopman' is not one of: glocal, glocal-strict"):
        from_mapping({"estimator": "koopman"})
    assert from_mapping({"dataset": "FMNIST"}).dataset == "fashion_mnist"  # aliases, any case


def test_train_help_reads_in_panels(run_cli):
    code, out, _ = run_cli(["train", "--help"])
    assert code == 0
    panels = [p for p in cli.PANELS if f"─ {p} ─" in out]
    assert panels == [p for p in cli.PANELS if p != "Inner optimizer" or "Inner optimizer" in out]
    assert len(panels) >= 7
    assert out.index("─ Run ─") < out.index("--method") < out.index("─ Data ─")
    assert out.index("─ Glocal / DMD ─") < out.index("--sigma") < out.index("─ SGLD ─")


def test_version_prints_versions_device_and_commit(run_cli):
    code, out, err = run_cli(["--version"])
    assert code == 0 and not err
    assert out.startswith("glocal ")
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpy", "backend", "device_kind", "commit", "dirty"):
        assert any(line.split()[0] == key for line in out.splitlines()[1:]), key


def test_provenance_records_versions_backend_and_commit():
    info = provenance.collect()
    import jax
    import numpy

    assert info["jax"] == jax.__version__ and info["numpy"] == numpy.__version__
    assert info["backend"] == jax.default_backend() and info["device_count"] == len(jax.local_devices())
    assert set(info) >= {"python", "jaxlib", "flax", "optax", "device_kind", "commit", "dirty"}
    json.dumps(info)
    if (ROOT / ".git").exists():
        assert len(info["commit"]) == 40 and isinstance(info["dirty"], bool)


def test_provenance_outside_a_checkout(tmp_path, monkeypatch):
    provenance.git_state.cache_clear()
    try:
        assert provenance.git_state(str(tmp_path)) == {"commit": None, "dirty": None}
        monkeypatch.setenv(provenance.COMMIT_ENV, "abc123")
        provenance.git_state.cache_clear()
        assert provenance.git_state(str(tmp_path))["commit"] == "abc123"
    finally:
        provenance.git_state.cache_clear()


# ---------------------------------------------------------------- settings the run ignores


def test_an_explicit_flag_the_method_ignores_warns_and_the_run_goes_on(run_cli, tmp_path):
    code, _, err = run_cli(["train", "--method", "local", "--estimator", "glocal-robust", "--data-dir", str(tmp_path / "x")])
    assert code == 2  # the missing data folder stops it later, after the warning
    warnings = [ln for ln in err if ln.startswith("warning:")]
    assert warnings == ["warning: --estimator is read by --method glocal only; this run (--method local) ignores it"]


def test_learn_given_to_a_fixed_run_warns(run_cli, tmp_path):
    """--method none learns nothing: an explicit --learn is named as ignored, not silently dropped."""
    code, _, err = run_cli(["train", "--method", "none", "--inner-optimizer", "adam", "--learn", "lr",
                            "--data-dir", str(tmp_path / "x")])
    assert code == 2  # the missing data folder stops it later, after the warning
    assert [ln for ln in err if ln.startswith("warning:")] == [
        "warning: --learn is read by --method local / glocal / global / sgld only; this run (--method none) ignores it"]


def test_defaults_and_read_settings_do_not_warn():
    cfg = from_mapping({"method": "glocal"})
    assert ignored_settings(cfg, {"estimator": "--estimator", "sigma": "--sigma", "tau": "--tau"}) == []
    assert ignored_settings(TrainConfig(), {}) == []
    sgld = from_mapping({"method": "sgld", "learn": "weight_decay"})
    assert ignored_settings(sgld, {"sgld_thin": "--sgld-thin"}) == []
    assert ignored_settings(from_mapping({"method": "none"}), {"sgld_thin": "--sgld-thin"}) == [
        "warning: --sgld-thin is read by --method sgld only; this run (--method none) ignores it"]
    reweight = from_mapping({"task": "reweight", "method": "local"})
    assert ignored_settings(reweight, {"val_fraction": "--val-fraction"}) == [
        "warning: --val-fraction is read by --task optimizer only; this run (--task reweight) ignores it"]


def test_params_file_keys_warn_only_where_they_set_something():
    params = {"train": {"momentum0": 0.1, "learn": ["lr", "momentum", "weight_decay"]},
              "hpo": {"sigma": 20, "estimator": "glocal-robust", "sgld": {"thin": 1, "damping": 0.5}}}
    given = given_in_file(params)
    assert given == {"estimator": "hpo.estimator in params.yaml", "sgld_damping": "hpo.sgld.damping in params.yaml"}
    lines = ignored_settings(from_mapping({"method": "local"}), given)
    assert lines == ["warning: hpo.estimator in params.yaml is read by --method glocal only; this run (--method local) ignores it",
                     "warning: hpo.sgld.damping in params.yaml is read by --method sgld only; this run (--method local) ignores it"]


def test_the_repository_params_file_sets_nothing_a_method_ignores():
    """`dvc repro`'s stages pass --params params.yaml to every method: its shared sections stay quiet."""
    import yaml

    given = given_in_file(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for method in ("none", "local", "glocal", "global"):
        assert ignored_settings(from_mapping({"method": method}), given) == [], method


def test_every_method_or_task_named_by_a_setting_exists():
    from glocal_cli.config import TASKS
    from glocal_cli.hpo import METHODS

    for name, (_, f) in LEAVES.items():
        assert set(f.metadata.get(settings.METHODS, ())) <= set(METHODS), name
        assert set(f.metadata.get(settings.TASKS, ())) <= set(TASKS), name
        assert f.metadata.get(settings.PANEL) in cli.PANELS, name


# ---------------------------------------------------------------- house rules


def _module_imports() -> dict:
    """``{module: {glocal_cli modules it imports}}``, module-level and inside functions alike."""
    pkg = ROOT / "glocal_cli"
    mods = {}
    for path in pkg.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {resolve(a.name) for a in node.names if a.name.startswith("glocal_cli")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.startswith("glocal_cli"):
                    deps |= {resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base)
                             for a in node.names}
        graph[name] = deps - {name, ""}
    return graph


MAX_FILE_LINES = 600


def test_no_file_of_the_package_is_longer_than_600_lines():
    """A room holds one concern: a file past 600 lines is cut into named parts (issue 27)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "glocal_cli").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, long


def test_no_import_circle_in_the_package():
    graph = _module_imports()
    assert graph["glocal_cli.tasks"] >= {"glocal_cli.config"}  # the walk sees imports
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])



def test_no_private_jax_in_the_package():
    text = subprocess.run(["git", "grep", "-n", "-e", "jax._src", "-e", "jax.interpreters", "--", "glocal_cli"],
                          cwd=ROOT, capture_output=True, text=True)
    if text.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    assert text.stdout == "", text.stdout


@pytest.mark.realdata
def test_train_piped_shows_the_run_folder_unbroken(small_real_data, tmp_path):
    """`glocal train ... | cat` in a narrow terminal: the closing lines name the run folder in one piece."""
    import os

    out = tmp_path / "a-rather-long-folder-name-for-a-run-of-glocal-train" / "fashion_mnist-optimizer-none-lr0.1-seed0"
    cmd = (f"{sys.executable} -m glocal_cli.cli train --method none --steps 4 --tau 2 --batch-size 16 --val-fraction 0.02 --lr0 0.1 "
           f"--data-dir {small_real_data} --out {out} | cat")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "60"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run folder: {out}" in done.stdout.splitlines(), done.stdout
    assert any(line.endswith(str(out)) for line in done.stdout.splitlines() if line.startswith("->"))
