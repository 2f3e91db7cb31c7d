"""glocal_cli.params: reading params.yaml, profiles, precedence and bad input (issue 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import pytest
import yaml

from glocal_cli.config import TrainConfig
from glocal_cli.errors import UserError
from glocal_cli.params import load_params, profile_section, train_config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def _params(**sections):
    base = {"profile": "quick", "train": {}, "hpo": {}, "profiles": {"quick": {"steps": 400}, "paper": {"steps": 20000}}}
    base.update(sections)
    return base


# --- unknown keys and profiles --------------------------------------------------------


@pytest.mark.parametrize("section", ["train", "hpo"])
def test_unknown_key_in_train_or_hpo_is_named(section):
    params = _params(**{section: {("tau" if section == "hpo" else "lr0"): 0.5 if section == "train" else 10,
                                  "bogus_knob": 1}})
    with pytest.raises(UserError, match=f"unknown parameter {section}.bogus_knob; known: .*batch_size"
                       if section == "train" else "unknown parameter hpo.bogus_knob; known: .*dmd_tol"):
        train_config(params, None, {})


def test_setting_in_the_wrong_section_names_its_section():
    with pytest.raises(UserError, match="train.sigma: an outer-loop setting, it belongs in the hpo section"):
        train_config(_params(train={"sigma": 6}), None, {})
    with pytest.raises(UserError, match="unknown parameter hpo.lr0"):
        train_config(_params(hpo={"lr0": 0.5}), None, {})


def test_layers_are_merged_before_validation():
    """A layer may be inconsistent on its own (hpo: tau 10 with the default T = 20 000 is fine,
    but the profile's steps: 40 with train defaults' tau 50 would not be): only the result is validated."""
    params = _params(profiles={"small": {"steps": 40}}, hpo={"tau": 10, "sigma": 6, "m": 3})
    cfg = train_config(params, "small", {})
    assert (cfg.hpo.steps, cfg.hpo.tau, cfg.hpo.sigma, cfg.hpo.m) == (40, 10, 6, 3)
    with pytest.raises(UserError, match="steps must be a multiple of tau"):
        train_config(params, "small", {"tau": 15})


def test_unknown_key_in_profile_is_named():
    params = _params(profiles={"quick": {"steps": 40, "not_a_field": 3}})
    with pytest.raises(UserError, match="not_a_field"):
        train_config(params, "quick", {})


def test_unknown_override_is_named():
    with pytest.raises(UserError, match="nonsense"):
        train_config(_params(), None, {"nonsense": 1})


def test_unknown_profile_lists_the_profiles():
    with pytest.raises(UserError) as e:
        train_config(_params(), "nope", {})
    msg = str(e.value)
    assert "'nope'" in msg and "quick" in msg and "paper" in msg
    assert "\n" not in msg


def test_unknown_default_profile_from_the_file():
    with pytest.raises(UserError, match="'fast'.*quick, paper"):
        profile_section(_params(profile="fast"), None)


def test_no_profile_at_all_is_allowed():
    params = {"train": {"batch_size": 7}, "hpo": {"steps": 700}}
    assert profile_section(params, None) == {}
    cfg = train_config(params, None, {})
    assert (cfg.batch_size, cfg.hpo.steps) == (7, 700)


# --- GPU requirement ------------------------------------------------------------------


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the refusal on a machine without a GPU")
def test_gpu_required_model_is_refused_on_cpu():
    params = _params(profiles={"big": {"steps": 20000, "gpu_required_for": ["wrn16_2"]}})
    with pytest.raises(UserError, match="GPU") as e:
        train_config(params, "big", {"model": "wrn16_2"})
    msg = str(e.value)
    assert "wrn16_2" in msg and "quick" in msg  # names the fix
    assert "\n" not in msg


def test_gpu_requirement_applies_only_to_listed_models():
    params = _params(profiles={"big": {"steps": 20000, "gpu_required_for": ["wrn16_2"]}})
    cfg = train_config(params, "big", {"model": "lenet"})
    assert cfg.model == "lenet" and cfg.hpo.steps == 20000
    assert not hasattr(cfg, "gpu_required_for")


def test_gpu_required_for_is_a_profile_only_key():
    with pytest.raises(UserError, match="gpu_required_for"):
        train_config(_params(train={"gpu_required_for": ["wrn16_2"]}), None, {})


def test_profile_section_is_not_mutated():
    params = _params(profiles={"big": {"steps": 500, "gpu_required_for": ["wrn16_2"]}})
    train_config(params, "big", {})
    assert params["profiles"]["big"]["gpu_required_for"] == ["wrn16_2"]


# --- precedence -----------------------------------------------------------------------


def test_precedence_defaults_train_hpo_profile_overrides():
    d = TrainConfig()
    params = {
        "profile": "p",
        "train": {"batch_size": 64, "lr0": 0.01, "val_fraction": 0.05},
        "hpo": {"tau": 40, "sigma": 8, "m": 4},
        "profiles": {"p": {"m": 5, "batch_size": 16, "val_fraction": 0.2}},
    }
    cfg = train_config(params, None, {"batch_size": 8, "seed": None})
    assert cfg.hpo.steps == d.hpo.steps  # default only
    assert cfg.lr0 == 0.01 and cfg.hpo.tau == 40  # train / hpo only
    assert cfg.hpo.sigma == 8  # hpo
    assert cfg.hpo.m == 5 and cfg.val_fraction == 0.2  # profile over hpo and train
    assert cfg.batch_size == 8  # override over profile
    assert cfg.seed == d.seed  # a None override leaves the value alone


def test_explicit_profile_beats_the_files_default():
    params = _params(profiles={"quick": {"steps": 400}, "paper": {"steps": 20000}})
    assert train_config(params, None, {}).hpo.steps == 400
    assert train_config(params, "paper", {}).hpo.steps == 20000


# --- the file itself ------------------------------------------------------------------


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_params(tmp_path / "absent.yaml")


def test_malformed_yaml_is_a_one_line_user_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML") as e:
        load_params(bad)
    assert "\n" not in str(e.value)


def test_non_mapping_file_is_a_user_error(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        load_params(bad)


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_repository_params_yaml_loads_and_validates(profile):
    params = load_params(PARAMS)
    assert set(params["profiles"]) >= {"quick", "paper"}
    cfg = train_config(params, profile, {})
    prof = yaml.safe_load(PARAMS.read_text())["profiles"][profile]
    assert cfg.hpo.steps == prof["steps"] and cfg.hpo.tau == prof["tau"]
    assert cfg.hpo.sigma == prof["sigma"] and cfg.hpo.m == prof["m"]
    assert cfg.model == "lenet" and cfg.learn == ("lr", "momentum", "weight_decay")


def test_repository_default_profile_is_quick():
    params = load_params(PARAMS)
    assert train_config(params, None, {}) == train_config(params, "quick", {})


# --- the command line -----------------------------------------------------------------


def test_cli_unknown_profile_exits_2_with_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "glocal_cli.cli", "train", "--params", "params.yaml", "--profile", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "nope" in lines[0] and "quick" in lines[0]
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"profiles": {"quick": 5}, "profile": "quick"}, "profiles.quick"),
        ({"profiles": ["quick"], "profile": "quick"}, "profiles"),
        ({"train": ["steps"]}, "train"),
        ({"hpo": 3}, "hpo"),
        ({"profiles": {"p": {"gpu_required_for": "wrn16_2"}}, "profile": "p"}, "gpu_required_for"),
    ],
)
def test_wrongly_shaped_sections_are_user_errors(params, needle):
    from glocal_cli.params import train_config

    with pytest.raises(UserError, match=needle):
        train_config(params, None, {})


# --- one source of settings (issue 12) ---------------------------------------------------


def test_every_setting_has_exactly_one_train_option_and_back():
    """`glocal train` has one --option per settable field of TrainConfig / HPOConfig, and no other
    option than those and the command's own flags; each help shows the dataclass default."""
    import dataclasses
    import typer

    from glocal_cli import cli
    from glocal_cli.config import LEAVES, default_of
    from glocal_cli.hpo import HPOConfig

    command = typer.main.get_command(cli.app).commands["train"]
    options = {p.name: p for p in command.params if p.param_type_name == "option" and p.name != "help"}
    assert len(options) == len(command.params)  # no arguments
    from glocal_cli.hpo import SGLDConfig

    fields = ({f.name for f in dataclasses.fields(TrainConfig) if f.name != "hpo"}
              | {f.name for f in dataclasses.fields(HPOConfig) if f.name != "sgld"}
              | {f"sgld_{f.name}" for f in dataclasses.fields(SGLDConfig)})
    assert set(LEAVES) == fields
    assert set(options) == fields | set(cli.TRAIN_COMMAND_ONLY)
    for name in fields:
        assert options[name].opts == [f"--{name.replace('_', '-')}"], options[name].opts
        default = default_of(name)
        shown = ",".join(default) if isinstance(default, tuple) else ("unset" if default in (None, "") else default)
        assert options[name].help.endswith(f"(default {shown})"), (name, options[name].help)
        assert options[name].default is None  # unset flags leave params.yaml / the defaults alone
    assert default_of("sigma") == HPOConfig().sigma == 20 and default_of("lr0") == TrainConfig().lr0


def test_configs_validate_when_built_and_user_error_is_a_value_error():
    import dataclasses

    from glocal_cli.config import from_mapping
    from glocal_cli.hpo import HPOConfig

    assert issubclass(UserError, ValueError)
    cfg = from_mapping({"sigma": 6, "tau": 10, "m": 3, "steps": 40, "learn": "lr,momentum"})
    assert cfg.hpo == HPOConfig(sigma=6, tau=10, m=3, steps=40) and cfg.learn == ("lr", "momentum")
    assert from_mapping({"hpo": {"sigma": 6, "tau": 10, "m": 3}}).hpo.sigma == 6  # nested sections too
    with pytest.raises(UserError, match="glocal needs 1 <= m <= sigma - 2"):
        dataclasses.replace(cfg.hpo, m=5)  # replace re-validates
    with pytest.raises(UserError, match="--lr0 must be in"):
        dataclasses.replace(cfg, lr0=2.0)
    with pytest.raises(UserError, match="unknown parameter hpo.sigmaa; known: .*sigma"):
        from_mapping({"hpo": {"sigmaa": 3}})
    assert cfg.to_dict()["sigma"] == 6 and "hpo" not in cfg.to_dict()  # metrics.json keeps its flat config


def test_nested_sections_are_walked_generically():
    """settings.place/build fill any nested section from a nested mapping (no per-field code)."""
    import dataclasses

    from glocal_cli import settings
    from glocal_cli.settings import section, setting

    @dataclasses.dataclass(frozen=True)
    class Inner:
        a: int = setting(1, "a")

    @dataclasses.dataclass(frozen=True)
    class Outer:
        b: int = setting(2, "b")
        inner: Inner = section(Inner)

    assert settings.from_mapping(Outer, {"inner": {"a": 5}, "b": 3}) == Outer(b=3, inner=Inner(a=5))
    assert settings.from_mapping(Outer, {"a": 7}).inner.a == 7  # a leaf name routes to its section
    with pytest.raises(UserError, match="unknown parameter inner.c"):
        settings.from_mapping(Outer, {"inner": {"c": 1}})
    with pytest.raises(UserError, match="inner: expected a mapping"):
        settings.from_mapping(Outer, {"inner": 3})


def test_stages_are_entry_points_not_an_installed_package():
    """`python stages/<cmd>.py ARGS` is `glocal <cmd> ARGS`; only glocal_cli is packaged (no package `stages`)."""
    includes = [ln for ln in (ROOT / "pyproject.toml").read_text().splitlines() if ln.startswith("include")]
    assert includes == ['include = ["glocal_cli*"]'] and not (ROOT / "stages" / "__init__.py").exists()
    from glocal_cli import cli

    commands = {c.name for c in cli.app.registered_commands} | {c.callback.__name__ for c in cli.app.registered_commands}
    stage_files = sorted(p.stem for p in (ROOT / "stages").glob("*.py"))
    assert set(stage_files) <= commands and {"train", "verify", "bench"} <= set(stage_files)
    res = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py"), "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0 and "Usage: glocal train" in res.stdout and "--sigma" in res.stdout, res.stderr
    assert "import stages" not in (ROOT / "glocal_cli" / "cli.py").read_text()


def test_stage_command_interpolates_as_dvc_and_names_a_missing_key():
    from glocal_cli.params import stage_command

    params = {"grid": {"b": {"seeds": "0,1", "profile": "paper"}}, "data": {"raw_dir": "data/raw"}}
    cmd = "glocal train -P ${grid.b.profile} --seeds ${grid.b.seeds} --lr0 ${item.v.lr0} ${item.v.args} --data-dir ${data.raw_dir}"
    argv = stage_command(cmd, params, {"v": {"lr0": 0.001, "args": "--inner-optimizer sgd --schedule cosine"}})
    assert argv == ["glocal", "train", "-P", "paper", "--seeds", "0,1", "--lr0", "0.001", "--inner-optimizer", "sgd",
                    "--schedule", "cosine", "--data-dir", "data/raw"]
    with pytest.raises(UserError, match=r"\$\{grid.b.steps\} is not defined"):
        stage_command("glocal train --steps ${grid.b.steps}", params)
