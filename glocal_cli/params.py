"""Reading ``params.yaml``: the training defaults and the ``quick`` / ``paper`` profiles.

Layout (see the repository's ``params.yaml``)::

    profile: quick            # which entry of `profiles` applies
    train: {...}              # TrainConfig fields shared by every profile
    hpo: {tau, sigma, m, ...} # TrainConfig fields of the outer loop
      sgld: {temperature, ...}  # the sgld method's settings -> TrainConfig.sgld_* fields
    profiles:
      quick: {steps: ..., ...}
      paper: {steps: 20000, ..., gpu_required_for: [wrn28_2, wrn16_2]}

A profile holds TrainConfig fields, plus ``gpu_required_for`` (models that the
profile refuses to train without a GPU). Other top-level sections (``data``,
``grid``, ``report``, ``bench``, ``verify``) are read by their own stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from glocal_cli.config import TrainConfig, from_mapping
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


def hpo_fields(params: Dict[str, Any]) -> Dict[str, Any]:
    """The ``hpo`` section as TrainConfig fields: the nested ``hpo.sgld`` mapping becomes ``sgld_*``."""
    hpo = dict(_section(params, "hpo", ""))
    sgld = _section(hpo, "sgld", "hpo.")
    hpo.pop("sgld", None)
    hpo.update({f"sgld_{k}": v for k, v in sgld.items()})
    return hpo


def train_config(params: Dict[str, Any], profile: Optional[str], overrides: Dict[str, Any]) -> TrainConfig:
    """TrainConfig from defaults <- ``train`` <- ``hpo`` (with ``hpo.sgld``) <- profile <- command-line ``overrides``."""
    cfg = TrainConfig()
    cfg = from_mapping(_section(params, "train", ""), cfg)
    cfg = from_mapping(hpo_fields(params), cfg)
    prof = profile_section(params, profile)
    gpu_models = prof.pop("gpu_required_for", []) or []
    cfg = from_mapping(prof, cfg)
    cfg = from_mapping(overrides, cfg)
    if cfg.model in gpu_models:
        import jax

        if jax.default_backend() == "cpu":
            name = profile or params.get("profile")
            raise UserError(
                f"profile {name!r} trains {cfg.model} at full size, which needs a GPU and none is visible; "
                "use `-P quick` (or `dvc exp run -S profile=quick`) on this machine"
            )
    return cfg
