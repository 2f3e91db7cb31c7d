"""Reading ``params.yaml``: the training defaults and the ``quick`` / ``paper`` profiles.

Layout (see the repository's ``params.yaml``)::

    profile: quick            # which entry of `profiles` applies
    train: {...}              # TrainConfig's own fields shared by every profile
    hpo: {tau, sigma, m, ...} # HPOConfig fields (TrainConfig.hpo), nested sections as nested mappings
      sgld: {temperature, ...}  # SGLDConfig fields (HPOConfig.sgld; flat names sgld_temperature, ...)
    profiles:
      quick: {steps: ..., ...}
      paper: {steps: 20000, ..., gpu_required_for: [wrn28_2, wrn16_2]}

A profile holds settings of either section by name (``steps``, ``batch_size``), plus ``gpu_required_for`` (models that the
profile refuses to train without a GPU). Other top-level sections (``data``,
``grid``, ``report``, ``bench``, ``verify``) are read by their own stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import yaml

import dataclasses

from glocal_cli import settings
from glocal_cli.config import TrainConfig
from glocal_cli.errors import UserError

PROFILE_ONLY = ("gpu_required_for",)
#: Top-level sections a params file may have; anything else (a typo such as ``profil``) is refused.
TOP_LEVEL = ("profile", "data", "train", "hpo", "profiles", "grid", "report", "bench", "verify")


def load_params(path: str | Path) -> Dict[str, Any]:
    """Parse a params file; a missing or malformed file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--params {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--params {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--params {path}: expected a mapping at the top level")
    unknown = sorted(str(k) for k in data if k not in TOP_LEVEL)
    if unknown:
        raise UserError(f"--params {path}: unknown top-level key(s) {', '.join(unknown)}; known: {', '.join(TOP_LEVEL)}")
    return data


def _section(params: Dict[str, Any], key: str, where: str) -> Dict[str, Any]:
    """``params[key]`` as a mapping (missing or null: empty); anything else is a UserError."""
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}{key}: expected a mapping of names to values, got {type(value).__name__}")
    return value


def profile_section(params: Dict[str, Any], profile: Optional[str]) -> Dict[str, Any]:
    """The chosen profile's mapping (``profile`` or the file's default)."""
    profiles = _section(params, "profiles", "")
    name = profile or params.get("profile")
    if name is None:
        return {}
    if name not in profiles:
        raise UserError(f"unknown profile {name!r}; the params file defines: {', '.join(profiles) or 'none'}")
    section = dict(_section(profiles, name, "profiles."))
    gpu = section.get("gpu_required_for", [])
    if isinstance(gpu, str) or not isinstance(gpu or [], list):
        raise UserError(f"profiles.{name}.gpu_required_for: expected a list of model names, got {gpu!r}")
    return section


def given_in_file(params: Dict[str, Any]) -> Dict[str, str]:
    """Settings that the file's ``train`` / ``hpo`` sections set to a value other than the default.

    ``{setting name: "hpo.estimator in params.yaml"}``: what :func:`glocal_cli.config.ignored_settings`
    warns about when the run's method or task does not read it. A value equal to the default
    sets nothing; profiles are bundles for every method (their keys are not listed).
    """
    out: Dict[str, str] = {}
    by_path = {path: (name, f) for name, (path, f) in settings.leaves(TrainConfig).items()}

    def walk(section: Dict[str, Any], path: tuple, where: str) -> None:
        for key, value in section.items():
            if isinstance(value, dict):
                walk(value, path + (key,), f"{where}{key}.")
            elif path + (key,) in by_path:
                name, f = by_path[path + (key,)]
                if isinstance(f.default, tuple) and isinstance(value, (list, str)):
                    value = tuple(x.strip() for x in value.split(",")) if isinstance(value, str) else tuple(value)
                if value is not None and value != f.default:
                    out[name] = f"{where}{key} in params.yaml"

    walk(_section(params, "train", ""), (), "train.")
    walk(_section(params, "hpo", ""), ("hpo",), "hpo.")
    return out


def train_config(params: Dict[str, Any], profile: Optional[str], overrides: Dict[str, Any]) -> TrainConfig:
    """TrainConfig from defaults <- ``train`` <- ``hpo`` <- profile <- command-line ``overrides``.

    The layers are merged first and the config is built (and validated) once.
    ``train`` holds TrainConfig's own fields, ``hpo`` HPOConfig's (a setting in
    the wrong section is refused, naming the section it belongs to); a profile
    and the overrides name settings of either.
    """
    target: Dict[str, Any] = {}
    train = _section(params, "train", "")
    own = {f.name for f in dataclasses.fields(TrainConfig) if not settings.is_section(f)}
    misplaced = sorted(k for k in train if k not in own and k in settings.leaves(TrainConfig))
    if misplaced:
        raise UserError(f"train.{misplaced[0]}: an outer-loop setting, it belongs in the hpo section")
    settings.place(TrainConfig, target, train, "train.")
    settings.place(TrainConfig, target, {"hpo": _section(params, "hpo", "")})
    prof = profile_section(params, profile)
    gpu_models = prof.pop("gpu_required_for", []) or []
    settings.place(TrainConfig, target, prof, f"profiles.{profile or params.get('profile')}.")
    settings.place(TrainConfig, target, overrides)
    cfg = settings.build(TrainConfig, target)
    if cfg.model in gpu_models:
        import jax

        if jax.default_backend() == "cpu":
            name = profile or params.get("profile")
            raise UserError(
                f"profile {name!r} trains {cfg.model} at full size, which needs a GPU and none is visible; "
                "use `-P quick` (or `dvc exp run -S profile=quick`) on this machine"
            )
    return cfg


def stage_command(cmd: str, params: Dict[str, Any], item: Optional[Dict[str, Any]] = None) -> list:
    """A ``dvc.yaml`` stage's ``cmd`` with ``${item.…}`` / ``${a.b}`` interpolated as DVC does, as argv.

    ``params``: the parsed params file (override a key to change the line, e.g.
    ``grid.baselines.profile``); ``item``: the matrix item (``{"variant": {...}}``).
    Lets a job that runs outside DVC (``scripts/gpu/paper.py``) run a stage's own line,
    and tests check each line without DVC. A missing key is a one-line UserError.
    """
    import re
    import shlex

    def value(match: "re.Match") -> str:
        keys = match.group(1).split(".")
        node: Any = {"item": item or {}, **params}
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise UserError(f"dvc.yaml: ${{{match.group(1)}}} is not defined in the params or the matrix item")
            node = node[key]
        return str(node)

    return shlex.split(re.sub(r"\$\{([^}]+)\}", value, cmd))
