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
REWEIGHT_LOSSES = ("mean", "sum")  # ours: mean_i L_i mu(L_i); the paper's text: sum_i L_i mu(L_i)
IMBALANCE_EXPONENTS = ("cui", "paper")  # class c keeps n_max f^(-c/(C-1)) (Cui et al.) or f^(-c/C) (paper's text)
SGLD_LEARNABLE = ("weight_decay",)  # hyperparameters inside the training loss (optimizer task)
MNIST_OUTER_LR, CIFAR_OUTER_LR = 0.1, 0.01  # the paper's outer Adam learning rates (Sec. 4)
REWEIGHT_SGLD_STEP = 0.1  # SGLD step of the reweight task: 0.01 / (1 - 0.9), SGD's effective step with momentum 0.9


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
    outer_lr: Optional[float] = None  # None: task default (0.1 MNIST-family optimizer task, 0.01 reweight / CIFAR)
    estimator: str = "glocal"  # method glocal: glocal | glocal-strict | glocal-horizon | glocal-robust | mean | local
    dmd_tol: Optional[float] = None  # None: the estimator's default; see docs/method.md for the evidence
    dmd_rank_rtol: float = dmd.DEFAULT_RANK_RTOL
    grad_mode: str = "auto"
    global_outer_steps: Optional[int] = None
    val_batch: int = -1  # -1 auto: validations in the scan on CPU, batched after it on a GPU
    val_fraction: float = 0.1
    imbalance_factor: float = 50.0  # reweight task: long-tail factor of the training set
    reweight_val: int = 1000  # reweight task: balanced validation examples taken from the training set
    reweight_loss: str = "mean"  # reweight task: "mean" (ours) or "sum" (the paper's literal inner loss)
    imbalance_exponent: str = "cui"  # long tail: "cui" f^(-c/(C-1)) or "paper" f^(-c/C)
    sgld_temperature: float = 1.0  # sgld: temperature of the SUMMED training loss (1 = posterior); T0 = this / N_train
    sgld_step_size: Optional[float] = None  # sgld: eta; None = lr0 (optimizer task) or 0.1 (reweight task)
    sgld_burn_in: int = 0  # sgld: steps at each window's start not averaged into the hypergradient
    sgld_thin: int = 1  # sgld: average every thin-th step after the burn-in
    sgld_damping: float = 0.0  # sgld: delta in z <- (1 - eta delta) z - eta (H z - u)
    sgld_persist_z: bool = False  # sgld: carry z across windows (False: z = 0 at every window's start)
    sgld_val_batch: int = 0  # sgld: validation examples per step for u_t (0: batch_size)
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
        for name, allowed in (("reweight_loss", REWEIGHT_LOSSES), ("imbalance_exponent", IMBALANCE_EXPONENTS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of: {', '.join(allowed)}")
        if self.method == "sgld" and self.task == "optimizer":
            bad = [x for x in self.learn if x not in SGLD_LEARNABLE]
            if bad:
                raise UserError(
                    f"--method sgld cannot learn {','.join(bad)}: the Langevin target exp(-L_T/T0) does not depend on "
                    "the SGD step size or momentum, so their hypergradient is zero; use --learn weight_decay"
                )
        if self.outer_lr is not None and not (math.isfinite(self.outer_lr) and self.outer_lr > 0):
            raise UserError(f"--outer-lr: outer_lr must be a finite number > 0, got {self.outer_lr}")
        if self.sgld_step_size is not None and not self.sgld_step_size > 0:
            raise UserError(f"--sgld-step-size must be > 0, got {self.sgld_step_size}")
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

    def resolved_outer_lr(self) -> float:
        """``outer_lr``, or the paper's task default: 0.01 for reweighting and CIFAR / WRN, else 0.1."""
        if self.outer_lr is not None:
            return float(self.outer_lr)
        cifar = self.task == "reweight" or self.model.startswith("wrn") or self.dataset.startswith("cifar")
        return CIFAR_OUTER_LR if cifar else MNIST_OUTER_LR

    def resolved_sgld_step_size(self) -> float:
        """SGLD step η: ``sgld_step_size``, or lr0 (optimizer task), or 0.1 (reweight task)."""
        if self.sgld_step_size is not None:
            return float(self.sgld_step_size)
        return REWEIGHT_SGLD_STEP if self.task == "reweight" else float(self.lr0)

    def hpo(self) -> HPOConfig:
        """The outer-loop part of the config (task defaults resolved here, in one place)."""
        return HPOConfig(
            method=self.method,
            steps=self.steps,
            tau=self.tau,
            sigma=self.sigma,
            m=self.m,
            outer_lr=self.resolved_outer_lr(),
            outer_optimizer=self.outer_optimizer,
            estimator=self.estimator,
            dmd_tol=self.dmd_tol,
            dmd_rank_rtol=self.dmd_rank_rtol,
            grad_mode=self.grad_mode,
            global_outer_steps=self.global_outer_steps,
            val_batch=self.val_batch,
            seed=self.seed,
            sgld_temperature=self.sgld_temperature,
            sgld_step_size=self.resolved_sgld_step_size(),
            sgld_burn_in=self.sgld_burn_in,
            sgld_thin=self.sgld_thin,
            sgld_damping=self.sgld_damping,
            sgld_persist_z=self.sgld_persist_z,
            sgld_val_batch=self.sgld_val_batch or self.batch_size,
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
