"""Run configuration: one frozen dataclass, fed by defaults, ``params.yaml`` and the CLI.

The defaults are the paper's Fashion-MNIST setting (τ = 50, σ = 20, m = 10,
T = 20 000, batch 128, outer Adam with lr 0.1, SGD with learnable learning
rate, momentum and weight decay). ``params.yaml`` (section ``train``) and the
command line override fields by name; :meth:`TrainConfig.validate` rejects
bad values with a one-line :class:`~glocal_cli.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Optional

from glocal_cli import dmd
from glocal_cli.atomic import check_output_dir
from glocal_cli.errors import UserError
from glocal_cli.estimators import ESTIMATORS
from glocal_cli.hpo import METHODS, HPOConfig
from glocal_cli.hypergrad import MODES as GRAD_MODES

TASKS = ("optimizer", "reweight")
MODELS = ("lenet", "wrn28_2", "wrn16_2")
CONV_IMPLS = ("auto", "patches", "lax")
OUTER_OPTIMIZERS = ("adam", "sgd", "rmsprop")
LEARNABLE = ("lr", "momentum", "weight_decay")
RUNS_DIR = "data/runs"  # default parent of run folders; `glocal report` reads the same folder


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on."""

    dataset: str = "fashion_mnist"
    task: str = "optimizer"  # "optimizer" (SGD hyperparameters) or "reweight" (data reweighting)
    model: str = "lenet"
    method: str = "glocal"  # none | local | glocal | global
    steps: int = 20_000  # T
    tau: int = 50
    sigma: int = 20
    m: int = 10
    batch_size: int = 128
    seed: int = 0
    lr0: float = 1e-3  # initial inner learning rate
    momentum0: float = 0.1
    weight_decay0: float = 1e-3
    learn: tuple = LEARNABLE  # which SGD hyperparameters are learned (optimizer task)
    outer_optimizer: str = "adam"
    outer_lr: float = 0.1
    estimator: str = "glocal"  # method glocal: glocal | glocal-strict | glocal-horizon | glocal-robust | mean | local
    dmd_tol: Optional[float] = None  # None: the estimator's default; see docs/method.md for the evidence
    dmd_rank_rtol: float = dmd.DEFAULT_RANK_RTOL
    grad_mode: str = "auto"
    global_outer_steps: Optional[int] = None
    val_batch: int = -1  # -1 auto: validations in the scan on CPU, batched after it on a GPU
    val_fraction: float = 0.1
    imbalance_factor: float = 50.0  # reweight task: long-tail factor of the training set
    reweight_val: int = 1000  # reweight task: balanced validation examples taken from the training set
    eval_every: int = 20  # windows between test-set evaluations (0: only at the end)
    checkpoint_every: int = 20  # windows between checkpoints (0: never)
    conv_impl: str = "auto"  # auto: patches+matmul on CPU, XLA/cuDNN convolutions on GPU
    data_dir: str = "data/raw"
    out: str = ""  # run directory; "" means data/runs/<dataset>-<task>-<method>-lr<lr0>-seed<seed>

    def validate(self) -> "TrainConfig":
        """Return self, or raise a one-line :class:`UserError` naming the bad value."""
        choices = {
            "task": TASKS,
            "model": MODELS,
            "method": METHODS,
            "estimator": ESTIMATORS,
            "grad_mode": GRAD_MODES,
            "conv_impl": CONV_IMPLS,
            "outer_optimizer": OUTER_OPTIMIZERS,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"--{name.replace('_', '-')} {value!r} is not one of: {', '.join(allowed)}")
        for name in ("steps", "tau", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
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
        for name in ("sigma", "m", "reweight_val"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.imbalance_factor) and self.imbalance_factor > 1.0):
            raise UserError(f"--imbalance-factor must be a finite number > 1, got {self.imbalance_factor}")
        if not self.data_dir:
            raise UserError("--data-dir must not be empty")
        check_output_dir(self.run_dir(), "--out")
        try:
            self.hpo().validate()
        except ValueError as e:
            raise UserError(str(e)) from None
        return self

    def resolved_conv_impl(self) -> str:
        """``conv_impl`` with ``auto`` resolved by the default JAX backend."""
        if self.conv_impl != "auto":
            return self.conv_impl
        import jax

        return "patches" if jax.default_backend() == "cpu" else "lax"

    def hpo(self) -> HPOConfig:
        """The outer-loop part of the config."""
        return HPOConfig(
            method=self.method,
            steps=self.steps,
            tau=self.tau,
            sigma=self.sigma,
            m=self.m,
            outer_lr=self.outer_lr,
            outer_optimizer=self.outer_optimizer,
            estimator=self.estimator,
            dmd_tol=self.dmd_tol,
            dmd_rank_rtol=self.dmd_rank_rtol,
            grad_mode=self.grad_mode,
            global_outer_steps=self.global_outer_steps,
            val_batch=self.val_batch,
        )

    @property
    def variant(self) -> str:
        """What produced the hypergradient: the method, or for glocal with another estimator that estimator.

        ``glocal`` (default estimator), ``glocal-strict``, ``glocal-mean``, ``glocal-local``, ...
        """
        return variant_name(self.method, self.estimator)

    def run_dir(self) -> Path:
        """Where outputs go."""
        if self.out:
            return Path(self.out)
        return Path(RUNS_DIR) / f"{self.dataset}-{self.task}-{self.variant}-lr{self.lr0:g}-seed{self.seed}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["learn"] = list(self.learn)
        return d


def variant_name(method: str, estimator: str = "glocal") -> str:
    """``method`` unless it is glocal with a non-default estimator: then the estimator (prefixed ``glocal-``)."""
    if method != "glocal" or estimator == "glocal":
        return method
    return estimator if estimator.startswith("glocal") else f"glocal-{estimator}"


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def from_mapping(values: Mapping[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """``base`` (defaults if None) with the non-None ``values`` replaced; unknown keys are a UserError."""
    base = base or TrainConfig()
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise UserError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    clean = {k: v for k, v in values.items() if v is not None}
    if "learn" in clean and isinstance(clean["learn"], str):
        clean["learn"] = tuple(x.strip() for x in clean["learn"].split(",") if x.strip())
    elif "learn" in clean:
        clean["learn"] = tuple(clean["learn"])
    if "dataset" in clean:
        from glocal_cli.data.registry import canonical_name

        clean["dataset"] = canonical_name(str(clean["dataset"]))
    return dataclasses.replace(base, **clean)
