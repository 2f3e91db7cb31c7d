"""The problems ``glocal verify`` checks: the quadratic (closed forms) and a classifier's glocal run, window by window."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from glocal_cli import quadratic, settings
from glocal_cli.config import TrainConfig
from glocal_cli.hypergrad import window_hypergrads
from glocal_cli.runner import HPORunner
from glocal_cli.verify.settings import VerifySettings
from glocal_cli.verify.references import compare, evaluate_window, expected_global, order_problems, tangent_run


def mlp_task(cfg, splits, hidden: int):
    """The optimizer task of :mod:`glocal_cli.tasks` with a one-hidden-layer ReLU MLP instead of LeNet.

    Same inner optimizer (:func:`~glocal_cli.inner_optim.learnable_sgd`), batches,
    validation loss and φ as :func:`glocal_cli.tasks.optimizer_task`; only the
    model differs (``[B, H, W, C] -> flatten -> hidden -> 10``).
    """
    import flax.linen as nn

    from glocal_cli.tasks import optimizer_task_for_model

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = x.reshape((x.shape[0], -1))
            return nn.Dense(splits.num_classes)(nn.relu(nn.Dense(hidden)(x)))

    return optimizer_task_for_model(cfg, splits, MLP())


def classifier_task(s: VerifySettings, seed: int, lr0: float):
    from glocal_cli.tasks import build_task
    from glocal_cli.train import load_splits

    cfg = settings.from_mapping(TrainConfig, {"seed": seed, "lr0": lr0}, s.train)
    splits = load_splits(cfg)
    task = build_task(cfg, splits) if s.model == "lenet" else mlp_task(cfg, splits, s.mlp_hidden)
    return cfg, splits, task


def problem_key(s: VerifySettings, lr0: float) -> str:
    """Key of a classifier setting in the summary, e.g. ``mlp/fashion_mnist/lr0=0.001``."""
    return f"{s.model}/{s.train.dataset}/lr0={lr0:g}"


def verify_classifier(s: VerifySettings, lr0: float, say: Callable[[str], None] = lambda m: None,
                      on_row: Optional[Callable[[Dict], None]] = None):
    """Rows of every checked window of every seed at ``lr0``, and the noise study's start state.

    The φ trajectory is the glocal run's (the run that the paper's figures show);
    each checked window gets a :func:`tangent_run` to T and, from the same start,
    ``expected_orders`` more runs to T with other minibatch orders (:func:`expected_global`).

    Returns ``(rows, noise_start)`` where ``noise_start`` is
    ``(runner, inner, phi, start)`` at ``s.noise_window`` of the first seed (or None);
    ``on_row(row)`` (optional) gets each row when it is done.
    """
    rows, noise_start = [], None
    windows = s.checked_windows()
    key = problem_key(s, lr0)
    h = s.train.hpo
    for seed in s.seeds:
        cfg, splits, task = classifier_task(s, seed, lr0)
        runner = HPORunner(task.problem, cfg.resolved_hpo())
        orders = order_problems(task.problem, int(task.problem.data["train_x"].shape[0]), cfg.batch_size,
                                s.expected_orders)
        hs = runner.init(task.phi0)
        last = max(max(windows), s.noise_window if seed == s.seeds[0] and "noise" in s.problems else 0)
        for w in range(1, last + 1):
            start = (w - 1) * h.tau
            if seed == s.seeds[0] and w == s.noise_window:
                noise_start = (runner, hs.inner, hs.phi, start)
            if w in windows:
                say(f"{key} seed {seed}: window {w}/{s.outer_windows}, tangents to T={h.steps}")
                tr = tangent_run(runner, hs.inner, hs.phi, start, s.lookaheads)
                say(f"{key} seed {seed}: window {w}/{s.outer_windows}, {s.expected_orders} more minibatch orders to T")
                eg = expected_global(runner, hs.inner, hs.phi, start, orders)
                expected = eg["expected_global"]
                eg_finite = bool(np.all(np.isfinite(expected)))
                row = {"problem": key, "lr0": lr0, "seed": seed, "window": w, "start": start,
                       "steps_left": h.steps - w * h.tau, "finite": tr.finite,
                       "hyperparams": task.hyperparams(np.asarray(hs.phi)),
                       "truth": tr.truth.tolist(), "seconds": {str(k): v for k, v in tr.seconds.items()},
                       "expected_global": expected.tolist(), "expected_global_finite": eg_finite,
                       "expected_global_orders": eg["orders"].tolist(),
                       "expected_global_finite_orders": eg["finite_orders"],
                       "expected_global_order_rel_std": eg["order_rel_std"],
                       "expected_global_seconds": eg["seconds"]}
                if tr.finite:
                    row["truth_vs_expected_global"] = compare(tr.truth, expected) if eg_finite else None
                    row["estimates"] = evaluate_window(tr.local, tr.truth, h.steps - w * h.tau, s,
                                                       tr.lookahead, tr.seconds,
                                                       expected=expected if eg_finite else None)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            hs, rec = runner.run_window(hs)
            if not rec.finite:
                say(f"{key} seed {seed}: training diverged at window {w}")
                break
    return rows, noise_start


def verify_quadratic(s: VerifySettings) -> List[Dict]:
    """Quadratic (p=2, q=2, float64): φ fixed; truth and look-aheads in closed form.

    No minibatches: every order gives the same ``h_T``, so the expected global is the truth.
    """
    rows = []
    tau = s.quad_tau
    with jax.enable_x64(True):
        for seed in s.quad_seeds:
            qp = quadratic.make_quadratic(p=2, q=2, seed=seed, lr=0.1, eig_range=(0.3, 1.0))
            theta0 = np.random.default_rng(seed).normal(size=2)
            phi = np.array([0.2, -0.3])
            prob = quadratic.inner_problem(qp, theta0)
            for w in s.quad_windows:
                start = (w - 1) * tau
                theta_s = quadratic.theta_closed_form(qp, theta0, phi, start)
                out = window_hypergrads(prob.step, prob.val_loss, jnp.asarray(theta_s), jnp.asarray(phi),
                                        prob.batches(start, tau), s.train.hpo.sigma)
                h = np.asarray(out.hypergrads, np.float64)
                truth = quadratic.hypergrad_closed_form(qp, theta_s, phi, s.quad_steps - start)
                look = {k: quadratic.hypergrad_closed_form(qp, theta_s, phi, min(k * tau, s.quad_steps - start))
                        for k in s.lookaheads}
                rows.append({"problem": "quadratic", "lr0": None, "seed": seed, "window": w, "start": start,
                             "steps_left": s.quad_steps - w * tau, "finite": True, "truth": truth.tolist(),
                             "expected_global": truth.tolist(), "expected_global_finite": True,
                             "expected_global_orders": None, "expected_global_finite_orders": 0,
                             "expected_global_order_rel_std": 0.0,
                             "truth_vs_expected_global": compare(truth, truth),
                             "estimates": evaluate_window(h, truth, s.quad_steps - w * tau, s, look, tau=tau,
                                                          expected=truth)})
    return rows


def noise_start_only(s: VerifySettings, lr0: float):
    """The noise study's start state when the classifier windows are not run: the glocal run to ``noise_window``."""
    cfg, _, task = classifier_task(s, s.seeds[0], lr0)
    runner = HPORunner(task.problem, cfg.resolved_hpo())
    hs = runner.init(task.phi0)
    for _ in range(s.noise_window - 1):
        hs, rec = runner.run_window(hs)
        if not rec.finite:
            break
    return runner, hs.inner, hs.phi, (s.noise_window - 1) * s.train.hpo.tau
