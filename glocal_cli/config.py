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
from typing import Any, List, Mapping, Optional

from glocal_cli import settings
from glocal_cli.data.registry import ALIASES, DATASETS, canonical_name
from glocal_cli.errors import UserError
from glocal_cli.hpo import PERF_PANEL, RUN_PANEL, HPOConfig
from glocal_cli.inner_optim import INNER_OPTIMIZERS, SCHEDULED, SCHEDULES, TUNABLE, learnable_names, tunable_optimizer
from glocal_cli.methods import METHOD_CLASSES
from glocal_cli.settings import section, setting

TASKS = ("optimizer", "reweight")
MODELS = ("lenet", "wrn28_2", "wrn16_2")
CONV_IMPLS = ("auto", "patches", "lax")
CONV_BATCHINGS = ("auto", "grouped", "blockdiag")  # auto + glocal_cli.seeds.CONV_BATCHINGS
LEARNABLE = ("lr", "momentum", "weight_decay")
RUNS_DIR = "data/runs"  # default parent of run folders; `glocal report` reads the same folder
REWEIGHT_LOSSES = ("mean", "sum")  # ours: mean_i L_i mu(L_i); the paper's text: sum_i L_i mu(L_i)
IMBALANCE_EXPONENTS = ("cui", "paper")  # class c keeps n_max f^(-c/(C-1)) (Cui et al.) or f^(-c/C) (paper's text)
SGLD_LEARNABLE = ("weight_decay",)  # hyperparameters inside the training loss (optimizer task)
MNIST_OUTER_LR, CIFAR_OUTER_LR = 0.1, 0.01  # the paper's outer Adam learning rates (Sec. 4)
DATASET_CHOICES = tuple(DATASETS) + tuple(ALIASES)  # names and aliases (canonical_name maps them)
REWEIGHT_ONLY = ("reweight",)
HYPER_PANEL, DATA_PANEL, OUTPUT_PANEL, INNER_PANEL = "Hyperparameters", "Data", "Output", "Inner optimizer"
EVAL_CHUNK = 1000  # examples per chunk of a full-batch evaluation (validation loss, test accuracy)
VAL_PRECISIONS = ("float32", "bfloat16")  # of the full-batch validation loss (the meta criterion)
#: ``--learn``'s help: each optimizer's names (from the optimizer itself) and the transform each gets
LEARN_HELP = ("learnable_sgd: " + ",".join(LEARNABLE) + " (each sigmoid(phi)); " + "; ".join(
    f"{n}: {','.join(learnable_names(n))}" for n in TUNABLE) + " (momentum, b1, b2: sigmoid(phi), the rest exp(phi))")
REWEIGHT_SGLD_STEP = 0.1  # SGLD step of the reweight task: 0.01 / (1 - 0.9), SGD's effective step with momentum 0.9


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; ``hpo`` is the outer loop's part."""

    dataset: str = setting("fashion_mnist", "dataset name (alias fmnist)", choices=DATASET_CHOICES, panel=DATA_PANEL)
    task: str = setting("optimizer", "optimizer: SGD's hyperparameters; reweight: data reweighting by a meta MLP",
                        choices=TASKS, panel=RUN_PANEL)
    model: str = setting("lenet", "the network (WRNs need a GPU)", choices=MODELS, panel=RUN_PANEL)
    batch_size: int = setting(128, "minibatch size", panel=RUN_PANEL)
    lr0: float = setting(1e-3, "initial inner learning rate", panel=HYPER_PANEL, tasks=("optimizer",))
    momentum0: float = setting(0.1, "initial momentum", panel=HYPER_PANEL, tasks=("optimizer",))
    weight_decay0: float = setting(1e-3, "initial weight decay", panel=HYPER_PANEL, tasks=("optimizer",))
    learn: tuple = setting(LEARNABLE, "learned hyperparameters (optimizer task), each named once; "
                                      + LEARN_HELP, panel=HYPER_PANEL, methods=("local", "glocal", "global", "sgld"),
                           tasks=("optimizer",))
    val_fraction: float = setting(0.1, "held-out validation fraction", panel=DATA_PANEL, tasks=("optimizer",))
    inner_optimizer: str = setting(
        "learnable_sgd", "the inner optimizer: learnable_sgd (the paper's SGD, every method) | sgd | adam | "
                         "schedule_free_sgd | prodigy (method none, or local / glocal / global tuning its --learn "
                         "hyperparameters) | hd (Baydin's hypergradient descent) | dadapt_adamw | mechanize_sgd | dog "
                         "(method none) (optax / optax.contrib; docs/baselines.md)",
        choices=INNER_OPTIMIZERS, panel=INNER_PANEL, methods=("none", "local", "glocal", "global"),
        tasks=("optimizer",))
    schedule: str = setting(
        "constant", "learning-rate schedule of --inner-optimizer sgd | adam over the T steps: constant | cosine "
                    "(to 0 at T) | warmup_cosine (linear warmup over 5 % of T, then cosine)",
        choices=SCHEDULES, panel=INNER_PANEL, methods=("none",), tasks=("optimizer",))
    hd_beta: float = setting(
        1e-3, "--inner-optimizer hd: hypergradient learning rate beta of the learning rate (Baydin et al. 2018)",
        panel=INNER_PANEL, methods=("none",), tasks=("optimizer",))
    imbalance_factor: float = setting(50.0, "reweight task: long-tail factor of the training set, > 1",
                                      panel=DATA_PANEL, tasks=REWEIGHT_ONLY)
    reweight_val: int = setting(1000, "reweight task: balanced validation examples taken from the training set",
                                panel=DATA_PANEL, tasks=REWEIGHT_ONLY)
    reweight_loss: str = setting("mean", "reweight task: mean (ours) or sum (the paper's literal sum_i L_i mu(L_i))",
                                 choices=REWEIGHT_LOSSES, panel=HYPER_PANEL, tasks=REWEIGHT_ONLY)
    imbalance_exponent: str = setting("cui", "long tail: cui (f^(-c/(C-1))) or paper (f^(-c/C))",
                                      choices=IMBALANCE_EXPONENTS, panel=DATA_PANEL, tasks=REWEIGHT_ONLY)
    eval_every: int = setting(20, "windows between test-set evaluations (0: only at the end)", panel=OUTPUT_PANEL)
    checkpoint_every: int = setting(20, "windows between checkpoints (0: never)", panel=OUTPUT_PANEL)
    conv_impl: str = setting("auto", "auto: patches+matmul on CPU, XLA/cuDNN on GPU", choices=CONV_IMPLS,
                             panel=PERF_PANEL)
    conv_batching: str = setting(
        "auto", "the convolutions (conv_impl lax) of several seeds in one program: auto (blockdiag on a GPU, grouped "
                "elsewhere) | grouped (JAX's grouped convolution) | blockdiag (one ungrouped convolution, "
                "block-diagonal kernel)", choices=CONV_BATCHINGS, panel=PERF_PANEL)
    conv_batching_max: int = setting(
        8, "blockdiag only: the most seeds batched block-diagonally (its kernel grows with the square)",
        panel=PERF_PANEL)
    seed_devices: int = setting(
        0, "devices the seeds of a group (--seeds) are split over, methods none / local / glocal; 0: every local "
           "device of the default backend, 1: one device (one program); the seeds are padded with copies when they "
           "do not split evenly (padding writes nothing)", panel=PERF_PANEL, methods=("none", "local", "glocal"))
    val_chunk: int = setting(
        0, "validation examples per chunk of the full-batch validation loss; 0: auto (1000)", panel=PERF_PANEL)
    val_precision: str = setting(
        "float32", "full-batch validation loss (the meta criterion): bfloat16 casts parameters and inputs, sums "
                   "the loss in float32; training steps stay float32", choices=VAL_PRECISIONS, panel=PERF_PANEL)
    data_dir: str = setting("data/raw", "prepared datasets or a folder of original files", panel=DATA_PANEL)
    out: str = setting("", "run directory; unset: data/runs/<dataset>-<task>-<variant>-lr<lr0>-seed<seed>, "
                           "where `glocal report` looks", panel=OUTPUT_PANEL)
    hpo: HPOConfig = section(HPOConfig, "the outer loop (params.yaml section hpo)")

    def __post_init__(self) -> None:
        """Normalize ``learn`` and ``dataset``; raise a one-line :class:`UserError` on a bad value."""
        learn = self.learn
        if isinstance(learn, str):
            learn = tuple(x.strip() for x in learn.split(",") if x.strip())
        object.__setattr__(self, "learn", tuple(learn))
        object.__setattr__(self, "dataset", canonical_name(str(self.dataset)))
        if not isinstance(self.hpo, HPOConfig):
            raise UserError(f"hpo must be an HPOConfig, got {type(self.hpo).__name__}")
        settings.check_choices(self)
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        self._check_start_values()
        if self.inner_optimizer == "learnable_sgd" or not METHOD_CLASSES[self.hpo.method].tunes:
            bad = [x for x in self.learn if x not in LEARNABLE]
            if bad or not self.learn or len(set(self.learn)) != len(self.learn):
                raise UserError(f"--learn {','.join(self.learn)}: choose each of {', '.join(LEARNABLE)} at most once")
        if self.hpo.method == "sgld" and self.task == "optimizer":
            bad = [x for x in self.learn if x not in SGLD_LEARNABLE]
            if bad:
                raise UserError(
                    f"--method sgld cannot learn {','.join(bad)}: the Langevin target exp(-L_T/T0) does not depend on "
                    "the SGD step size or momentum, so their hypergradient is zero; use --learn weight_decay"
                )
        self._check_inner_optimizer()
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0 (0: never), got {getattr(self, name)}")
        if self.conv_batching_max < 2:
            raise UserError(f"--conv-batching-max must be >= 2, got {self.conv_batching_max}")
        if self.seed_devices < 0:
            raise UserError(f"--seed-devices must be >= 0 (0: every local device), got {self.seed_devices}")
        if self.val_chunk < 0:
            raise UserError(f"--val-chunk must be >= 0 (0: auto), got {self.val_chunk}")
        if self.reweight_val < 1:
            raise UserError(f"--reweight-val must be >= 1, got {self.reweight_val}")
        if not (math.isfinite(self.imbalance_factor) and self.imbalance_factor > 1.0):
            raise UserError(f"--imbalance-factor must be a finite number > 1, got {self.imbalance_factor}")
        if not self.data_dir:
            raise UserError("--data-dir must not be empty")

    def _check_start_values(self) -> None:
        """The start values in the range the optimizer gives them: learnable_sgd's are ``sigmoid(φ)`` (in
        (0, 1)); another optimizer's learning rate and weight decay are positive (``exp(φ)`` when learned: a
        schedule-free SGD at lr 1.0 or a Prodigy multiplier above 1 are fine), a momentum in (0, 1)."""
        sigmoid = self.inner_optimizer == "learnable_sgd"
        for name in ("lr0", "momentum0", "weight_decay0"):
            value, flag = getattr(self, name), settings.flag(name)
            if (sigmoid or name == "momentum0") and not 0.0 < value < 1.0:
                why = "it is sigmoid(phi)" if sigmoid else "a momentum"
                raise UserError(f"{flag} must be in (0, 1) ({why}), got {value}")
            if not (math.isfinite(value) and value > 0.0):
                raise UserError(f"{flag} must be a finite number > 0 for --inner-optimizer {self.inner_optimizer}, "
                                f"got {value}")

    def _check_inner_optimizer(self) -> None:
        """Which optimizer each method reads: learnable_sgd every method; a fixed optimizer method none (the
        optimizer task); the :data:`~glocal_cli.inner_optim.TUNABLE` ones also local / glocal / global, with
        ``learn`` naming hyperparameters they have; a schedule only for sgd / adam under method none."""
        name, method = self.inner_optimizer, self.hpo.method
        if name != "learnable_sgd":
            tuned = METHOD_CLASSES[method].tunes
            if self.task != "optimizer" or (tuned and (name not in TUNABLE or METHOD_CLASSES[method].samples)):
                readers = "none" if name not in TUNABLE else "none / local / glocal / global"
                raise UserError(f"--inner-optimizer {name} is read by --method {readers} on --task optimizer (got "
                                f"--method {method}, --task {self.task})")
            if tuned:
                if self.schedule != "constant":
                    raise UserError(f"--schedule {self.schedule} applies to --method none; a hypergradient method "
                                    "tunes the learning rate itself")
                try:
                    tunable_optimizer(name, self.learn, lr0=self.lr0, momentum=self.momentum0,
                                      weight_decay=self.weight_decay0)
                except ValueError as e:
                    raise UserError(str(e)) from None
        if self.schedule != "constant" and name not in SCHEDULED:
            raise UserError(f"--schedule {self.schedule} applies to --inner-optimizer {' | '.join(SCHEDULED)}, "
                            f"not {name}")
        if not (math.isfinite(self.hd_beta) and self.hd_beta >= 0):
            raise UserError(f"--hd-beta must be a finite number >= 0, got {self.hd_beta}")

    @property
    def seed(self) -> int:
        """The run's seed (``hpo.seed``): split, initialization, batch order and sgld's noise."""
        return self.hpo.seed

    def resolved_outer_lr(self) -> float:
        """``hpo.outer_lr``, or the paper's task default: 0.01 for reweighting and CIFAR / WRN, else 0.1."""
        if self.hpo.outer_lr is not None:
            return float(self.hpo.outer_lr)
        cifar = self.task == "reweight" or self.model.startswith("wrn") or self.dataset.startswith("cifar")
        return CIFAR_OUTER_LR if cifar else MNIST_OUTER_LR

    def resolved_sgld_step_size(self) -> float:
        """SGLD step η: ``hpo.sgld.step_size``, or lr0 (optimizer task), or 0.1 (reweight task)."""
        if self.hpo.sgld.step_size is not None:
            return float(self.hpo.sgld.step_size)
        return REWEIGHT_SGLD_STEP if self.task == "reweight" else float(self.lr0)

    def resolved_hpo(self) -> HPOConfig:
        """``hpo`` with the task's defaults filled in (outer lr, sgld step and validation batch): what the runner gets."""
        h = self.hpo
        sgld = dataclasses.replace(h.sgld, step_size=self.resolved_sgld_step_size(),
                                   val_batch=h.sgld.val_batch or self.batch_size)
        return dataclasses.replace(h, outer_lr=self.resolved_outer_lr(), sgld=sgld)

    def resolved_seed_devices(self) -> list:
        """The devices a seed group is split over: the first ``seed_devices`` of ``jax.local_devices()`` (the
        default backend's), or all of them (0).

        A one-line :class:`UserError` when more are asked for than the machine has.
        """
        import jax

        devices = jax.local_devices()
        if self.seed_devices > len(devices):
            raise UserError(f"--seed-devices {self.seed_devices}: this machine has {len(devices)} "
                            f"{jax.default_backend()} device(s); use at most {len(devices)} (0: all)")
        return devices[: self.seed_devices or len(devices)]

    def resolved_val_chunk(self) -> int:
        """Examples per chunk of the validation loss: ``val_chunk``, or auto (0): ``EVAL_CHUNK`` (1000).

        Auto is 1000 on every backend: the whole set in one chunk, with the σ = 20
        recorded states of a glocal window evaluated together, needs about 46 GB by
        XLA's estimate for LeNet and 6 000 examples (14.5 GB in chunks of 1000), which
        several seeds in one program multiply (docs/performance.md has the measured
        GPU times of ``val_chunk``). A chunk larger than the validation set means the
        whole set in one call.
        """
        return self.val_chunk if self.val_chunk > 0 else EVAL_CHUNK

    @property
    def variant(self) -> str:
        """What produced the hypergradient: the method, or for glocal with another estimator that estimator.

        ``glocal`` (default estimator), ``glocal-strict``, ``glocal-mean``, ``glocal-local``, ...
        """
        return variant_name(self.hpo.method, self.hpo.estimator, self.inner_optimizer, self.schedule)

    def run_dir(self) -> Path:
        """Where outputs go."""
        if self.out:
            return Path(self.out)
        return Path(RUNS_DIR) / f"{self.dataset}-{self.task}-{self.variant}-lr{self.lr0:g}-seed{self.seed}"

    def to_dict(self) -> dict:
        """Every setting as one flat ``{name: value}`` dict (``metrics.json``'s ``config``; names are unique)."""
        return settings.to_flat(self)


def variant_name(method: str, estimator: str = "glocal", inner_optimizer: str = "learnable_sgd",
                 schedule: str = "constant") -> str:
    """``method``, except: glocal with a non-default estimator is the estimator (prefixed ``glocal-``);
    none with a fixed inner optimizer is that optimizer, with its schedule unless constant
    (``prodigy``, ``sgd-cosine``, ``adam-warmup_cosine``); a hypergradient method tuning another
    optimizer than learnable_sgd is followed by it (``local-adam``, ``glocal-schedule_free_sgd``)."""
    if method == "none" and inner_optimizer != "learnable_sgd":
        return inner_optimizer if schedule == "constant" else f"{inner_optimizer}-{schedule}"
    base = method
    if method == "glocal" and estimator != "glocal":
        base = estimator if estimator.startswith("glocal") else f"glocal-{estimator}"
    return base if inner_optimizer == "learnable_sgd" else f"{base}-{inner_optimizer}"


#: Every settable leaf: ``name -> (path, field)``, e.g. ``"sigma" -> (("hpo", "sigma"), field)``.
LEAVES = settings.leaves(TrainConfig)


def ignored_settings(cfg: TrainConfig, given: Mapping[str, str]) -> List[str]:
    """One warning line per setting in ``given`` that a run with ``cfg`` does not read.

    ``given``: ``{setting name: where it was set}`` (``"--estimator"``, ``"hpo.estimator in
    params.yaml"``). A setting declares the methods / tasks that read it
    (``settings.setting(methods=..., tasks=...)``); the line names them.
    """
    lines = []
    for name, where in given.items():
        meta = LEAVES[name][1].metadata
        for key, value in ((settings.METHODS, cfg.hpo.method), (settings.TASKS, cfg.task)):
            readers = meta.get(key)
            if readers is not None and value not in readers:
                option = "--method" if key == settings.METHODS else "--task"
                lines.append(f"warning: {where} is read by {option} {' / '.join(readers)} only; "
                             f"this run ({option} {value}) ignores it")
                break
    return lines


def default_of(name: str) -> Any:
    """The default of the setting ``name`` (a TrainConfig or HPOConfig field), from its dataclass."""
    return LEAVES[name][1].default


def from_mapping(values: Mapping[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """``base`` (defaults if None) with the non-None ``values`` applied, validated once.

    ``values`` holds setting names (``sigma``, ``lr0``: routed to their section)
    and/or nested sections (``{"hpo": {"sigma": 6}}``); unknown keys are a UserError.
    """
    return settings.from_mapping(TrainConfig, values, base)
