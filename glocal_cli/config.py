"""Run configuration: nested frozen dataclasses fed by defaults, ``params.yaml`` and the CLI.

:class:`TrainConfig` holds the run's settings and the outer loop's
:class:`~glocal_cli.hpo.HPOConfig` as ``TrainConfig.hpo`` (``params.yaml``'s
``train`` and ``hpo`` sections). Each default is written once, on its field
(with the help text the CLI shows); each class validates itself when built
(``__post_init__``), raising a one-line :class:`~glocal_cli.errors.UserError`.
The defaults are the paper's Fashion-MNIST setting (τ = 50, σ = 20, m = 10,
T = 20 000, batch 128, outer Adam with lr 0.1, SGD with learnable learning
rate, momentum and weight decay).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Optional

from glocal_cli import settings
from glocal_cli.errors import UserError
from glocal_cli.hpo import HPOConfig
from glocal_cli.settings import section, setting

TASKS = ("optimizer", "reweight")
MODELS = ("lenet", "wrn28_2", "wrn16_2")
CONV_IMPLS = ("auto", "patches", "lax")
LEARNABLE = ("lr", "momentum", "weight_decay")
RUNS_DIR = "data/runs"  # default parent of run folders; `glocal report` reads the same folder


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; ``hpo`` is the outer loop's part."""

    dataset: str = setting("fashion_mnist", "dataset name")
    task: str = setting("optimizer", "optimizer (SGD hyperparameters) | reweight (data reweighting)")
    model: str = setting("lenet", "lenet | wrn28_2 | wrn16_2")
    batch_size: int = setting(128, "minibatch size")
    seed: int = setting(0, "fixes split, initialization and batch order")
    lr0: float = setting(1e-3, "initial inner learning rate")
    momentum0: float = setting(0.1, "initial momentum")
    weight_decay0: float = setting(1e-3, "initial weight decay")
    learn: tuple = setting(LEARNABLE, "learned hyperparameters (optimizer task), e.g. lr,momentum,weight_decay")
    val_fraction: float = setting(0.1, "held-out validation fraction")
    imbalance_factor: float = setting(50.0, "reweight task: long-tail factor of the training set, > 1")
    reweight_val: int = setting(1000, "reweight task: balanced validation examples taken from the training set")
    eval_every: int = setting(20, "windows between test-set evaluations (0: only at the end)")
    checkpoint_every: int = setting(20, "windows between checkpoints (0: never)")
    conv_impl: str = setting("auto", "auto (patches+matmul on CPU, XLA/cuDNN on GPU) | patches | lax")
    data_dir: str = setting("data/raw", "prepared datasets or a folder of original files")
    out: str = setting("", "run directory; unset: data/runs/<dataset>-<task>-<variant>-lr<lr0>-seed<seed>, where `glocal report` looks")
    hpo: HPOConfig = section(HPOConfig, "the outer loop (params.yaml section hpo)")

    def __post_init__(self) -> None:
        """Normalize ``learn`` and ``dataset``; raise a one-line :class:`UserError` on a bad value."""
        learn = self.learn
        if isinstance(learn, str):
            learn = tuple(x.strip() for x in learn.split(",") if x.strip())
        object.__setattr__(self, "learn", tuple(learn))
        from glocal_cli.data.registry import canonical_name

        object.__setattr__(self, "dataset", canonical_name(str(self.dataset)))
        if not isinstance(self.hpo, HPOConfig):
            raise UserError(f"hpo must be an HPOConfig, got {type(self.hpo).__name__}")
        choices = {"task": TASKS, "model": MODELS, "conv_impl": CONV_IMPLS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"--{name.replace('_', '-')} {value!r} is not one of: {', '.join(allowed)}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name in ("lr0", "momentum0", "weight_decay0"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in (0, 1) (it is sigmoid(phi)), got {value}")
        bad = [x for x in self.learn if x not in LEARNABLE]
        if bad or not self.learn:
            raise UserError(f"--learn {','.join(self.learn)!r}: choose from {', '.join(LEARNABLE)}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0 (0: never), got {getattr(self, name)}")
        if self.reweight_val < 1:
            raise UserError(f"--reweight-val must be >= 1, got {self.reweight_val}")
        if not (math.isfinite(self.imbalance_factor) and self.imbalance_factor > 1.0):
            raise UserError(f"--imbalance-factor must be a finite number > 1, got {self.imbalance_factor}")
        if not self.data_dir:
            raise UserError("--data-dir must not be empty")

    def resolved_conv_impl(self) -> str:
        """``conv_impl`` with ``auto`` resolved by the default JAX backend."""
        if self.conv_impl != "auto":
            return self.conv_impl
        import jax

        return "patches" if jax.default_backend() == "cpu" else "lax"

    @property
    def variant(self) -> str:
        """What produced the hypergradient: the method, or for glocal with another estimator that estimator.

        ``glocal`` (default estimator), ``glocal-strict``, ``glocal-mean``, ``glocal-local``, ...
        """
        return variant_name(self.hpo.method, self.hpo.estimator)

    def run_dir(self) -> Path:
        """Where outputs go."""
        if self.out:
            return Path(self.out)
        return Path(RUNS_DIR) / f"{self.dataset}-{self.task}-{self.variant}-lr{self.lr0:g}-seed{self.seed}"

    def to_dict(self) -> dict:
        """Every setting as one flat ``{name: value}`` dict (``metrics.json``'s ``config``; names are unique)."""
        return settings.to_flat(self)


def variant_name(method: str, estimator: str = "glocal") -> str:
    """``method`` unless it is glocal with a non-default estimator: then the estimator (prefixed ``glocal-``)."""
    if method != "glocal" or estimator == "glocal":
        return method
    return estimator if estimator.startswith("glocal") else f"glocal-{estimator}"


#: Every settable leaf: ``name -> (path, field)``, e.g. ``"sigma" -> (("hpo", "sigma"), field)``.
LEAVES = settings.leaves(TrainConfig)


def default_of(name: str) -> Any:
    """The default of the setting ``name`` (a TrainConfig or HPOConfig field), from its dataclass."""
    return LEAVES[name][1].default


def from_mapping(values: Mapping[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """``base`` (defaults if None) with the non-None ``values`` applied, validated once.

    ``values`` holds setting names (``sigma``, ``lr0``: routed to their section)
    and/or nested sections (``{"hpo": {"sigma": 6}}``); unknown keys are a UserError.
    """
    return settings.from_mapping(TrainConfig, values, base)
