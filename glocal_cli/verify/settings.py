"""``glocal verify``'s settings: what is checked, on which problems, with which references."""

from __future__ import annotations

import dataclasses

import numpy as np

from glocal_cli import settings
from glocal_cli.config import TrainConfig
from glocal_cli.errors import UserError
from glocal_cli.estimators import ESTIMATORS
from glocal_cli.hpo import HPOConfig
from glocal_cli.settings import section, setting


PROFILES = ("cpu", "paper", "quick")


MODELS = ("mlp", "lenet")


ORDER_SEED = 10_000  # minibatch order o of the expected global (and of the noise study) draws with seed ORDER_SEED + o


MIN_ORDERS = 4


PROBLEMS = ("quadratic", "classifier", "noise")


IF_EMPTY_VARIANTS = ("zero", "local")  # glocal's if_empty alternatives compared with the default (nearest)


REFERENCES = ("truth", "expected_global")  # the row keys of the two references


def if_empty_name(if_empty: str) -> str:
    """Name of ``glocal`` run with another ``if_empty``, e.g. ``glocal(if_empty=zero)``."""
    return f"glocal(if_empty={if_empty})"


def lookahead_name(k: int) -> str:
    """Name of the truncated ``k``·τ look-ahead estimator, e.g. ``truncated-4tau``."""
    return f"truncated-{k}tau"


def _cpu_train() -> TrainConfig:
    """The CPU protocol's run settings: Fashion-MNIST, T = 1500, τ 50, σ 20, m 10, batch 128, 2 % validation."""
    return TrainConfig(val_fraction=0.02, hpo=HPOConfig(steps=1500))


@dataclasses.dataclass(frozen=True)
class VerifySettings:
    """Settings of one ``glocal verify`` protocol (defaults: the CPU protocol), validated when built.

    ``train`` holds the classifier runs' settings (dataset, batch size,
    validation split, T / τ / σ / m, outer lr, ``dmd_tol`` and
    ``dmd_rank_rtol`` of the estimators); every run is ``train`` at one seed and one lr0.
    ``windows`` are 1-based outer steps; empty means ``windows_per_seed``
    windows spread evenly over ``1 .. S - max(lookaheads)`` (S = T/τ), so that
    every look-ahead stops before T.
    """

    profile: str = setting("cpu", "cpu | paper | quick")
    model: str = setting("mlp", "mlp (CPU protocol) | lenet (paper protocol)")
    mlp_hidden: int = setting(128, "hidden units of the MLP")
    lr0s: tuple = setting((1e-3, 0.1), "initial learning rates")
    seeds: tuple = setting((0, 1, 2), "seeds of the classifier runs")
    windows: tuple = setting((), "1-based windows checked; empty: windows_per_seed spread evenly")
    windows_per_seed: int = setting(10, "windows checked per seed when windows is empty")
    estimators: tuple = setting(ESTIMATORS, "estimators compared (must include local)")
    lookaheads: tuple = setting((2, 4), "truncated look-aheads k (k windows with tangents)")
    noise_batch_sizes: tuple = setting((128, 512, 2048), "batch sizes of the noise study")
    noise_orders: int = setting(8, "minibatch orders per batch size of the noise study")
    noise_window: int = setting(5, "the noise study starts at this window of the first seed's run")
    quad_seeds: tuple = setting((0, 1, 2, 3, 4), "seeds of the quadratic problem")
    quad_windows: tuple = setting((1, 3, 10), "windows checked on the quadratic")
    quad_steps: int = setting(2000, "T of the quadratic")
    quad_tau: int = setting(50, "tau of the quadratic")
    problems: tuple = setting(("quadratic", "classifier", "noise"), "which studies run")
    expected_orders: int = setting(
        4, f"minibatch orders K (>= {MIN_ORDERS}) whose true global hypergradients are averaged into the "
           "expected-global reference of each checked window")
    train: TrainConfig = section(TrainConfig, "the classifier runs' settings", default=_cpu_train)

    @property
    def outer_windows(self) -> int:
        """S = T / τ."""
        return self.train.hpo.windows

    def checked_windows(self) -> tuple:
        """The 1-based windows whose true global hypergradient is computed."""
        if self.windows:
            return tuple(sorted(set(int(w) for w in self.windows)))
        last = max(1, self.outer_windows - max(self.lookaheads, default=0))
        n = min(self.windows_per_seed, last)
        return tuple(sorted(set(int(round(x)) for x in np.linspace(1, last, n))))

    def __post_init__(self) -> None:
        """Raise a one-line :class:`UserError` (a ``ValueError``) naming a bad value and what is allowed."""
        for name in ("lr0s", "seeds", "windows", "estimators", "lookaheads", "noise_batch_sizes", "problems",
                     "quad_seeds", "quad_windows"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [p for p in self.problems if p not in PROBLEMS]
        if unknown or not self.problems:
            raise UserError(f"problems {list(self.problems)} must be among: {', '.join(PROBLEMS)}")
        if self.expected_orders < MIN_ORDERS:
            raise UserError(f"expected_orders must be >= {MIN_ORDERS} (minibatch orders of the expected global "
                            f"hypergradient), got {self.expected_orders}")
        h = self.train.hpo
        if h.method != "glocal":
            raise UserError(f"method must be glocal (the run whose windows are checked), got {h.method!r}")
        if self.profile not in PROFILES:
            raise UserError(f"profile {self.profile!r} is not one of: {', '.join(PROFILES)}")
        if self.model not in MODELS:
            raise UserError(f"model {self.model!r} is not one of: {', '.join(MODELS)}")
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown or not self.estimators:
            raise UserError(f"estimators {list(self.estimators)} must be among: {', '.join(ESTIMATORS)}")
        if "local" not in self.estimators:
            raise UserError("estimators must include 'local' (the baseline every row is compared with)")
        if any(int(k) < 2 for k in self.lookaheads):
            raise UserError(f"lookaheads must be integers >= 2 (k windows), got {list(self.lookaheads)}")
        S = self.outer_windows
        w = self.checked_windows()
        if not w or min(w) < 1 or max(w) > S:
            raise UserError(f"windows must be outer steps in 1..{S} (T={h.steps}, tau={h.tau}), got {list(w)}")
        if not self.seeds or min(self.seeds) < 0:
            raise UserError(f"seeds must be non-empty and >= 0, got {list(self.seeds)}")
        if not self.lr0s or any(not 0.0 < x < 1.0 for x in self.lr0s):
            raise UserError(f"lr0s must be in (0, 1) (it is sigmoid(phi)), got {list(self.lr0s)}")
        if "noise" in self.problems:
            if not 1 <= self.noise_window <= S:
                raise UserError(f"noise_window must be in 1..{S}, got {self.noise_window}")
            if self.noise_orders < 2 or any(b < 1 for b in self.noise_batch_sizes):
                raise UserError("noise study needs >= 2 orders and batch sizes >= 1")
        if self.quad_steps % self.quad_tau or any(
            not 1 <= w <= self.quad_steps // self.quad_tau for w in self.quad_windows
        ):
            raise UserError(f"quad_windows must be in 1..{self.quad_steps // self.quad_tau}, got {list(self.quad_windows)}")
        if h.sigma > self.quad_tau:
            raise UserError(f"sigma must be <= quad_tau, got sigma={h.sigma}, quad_tau={self.quad_tau}")


def profile_settings(profile: str = "cpu", **overrides) -> VerifySettings:
    """The named protocol with ``overrides`` (None values ignored), validated.

    * ``cpu``: MLP (784-128-10) on Fashion-MNIST, T = 1500, τ = 50, σ = 20, m = 10,
      batch 128, 2 % validation, seeds 0-2, 10 windows per seed, lr0 1e-3 and 0.1.
    * ``paper``: LeNet, T = 20 000, τ = 50, σ = 20, m = 10, batch 128, 10 %
      validation, seeds 0-1, 16 windows per seed (a GPU job).
    * ``quick``: a seconds-long smoke test (T = 60, τ = 10, σ = 6, m = 2).
    """
    if profile not in PROFILES:
        raise UserError(f"profile {profile!r} is not one of: {', '.join(PROFILES)}")
    base = {
        "cpu": {},
        "paper": dict(model="lenet", steps=20_000, val_fraction=0.1, seeds=(0, 1), windows_per_seed=16,
                      noise_window=20),
        "quick": dict(steps=60, tau=10, sigma=6, m=2, seeds=(0,), windows_per_seed=2, batch_size=32,
                      val_fraction=0.01, mlp_hidden=16, noise_batch_sizes=(16, 64), noise_orders=3,
                      noise_window=2, quad_seeds=(0,), quad_windows=(1,), quad_steps=200, quad_tau=10),
    }[profile]
    given = {k: v for k, v in overrides.items() if v is not None}
    return settings.from_mapping(VerifySettings, {**base, **given, "profile": profile})
