"""Does an estimator approximate the TRUE global hypergradient? (the reviewers' question)

For a checked window ``w`` (inner steps ``start = (w-1)τ .. wτ``) of a glocal
training run, from the window's start state with φ fixed and the tangents
reset to zero at ``start``, training continues to the end T with tangents
carried across chunks of τ steps (forward mode). The hypergradient at T is the
window's **true global hypergradient** ``h_T``. The same tangent run gives,
for free,

* the window's last σ local hypergradients ``h_{τ-σ+1} .. h_τ`` (its first
  chunk), which every estimator of :mod:`glocal_cli.estimators` is fed with
  ``steps_left = T - wτ``;
* the **truncated look-aheads** ``h_{kτ}`` (k = 2, 4: the hypergradient after
  k windows with tangents, "the best local money can buy"); they cost k
  windows with tangents instead of one (reported as tangent steps and seconds).

The same loop (:func:`glocal_cli.methods.tangents_to_end`, the one that
carries tangents to T for the ``global`` method too) run again from the same
window start with K other minibatch orders (``expected_orders``, K >= 4; order
``o`` draws its batches with the seed ``ORDER_SEED + o``) gives K single-order
truths; their mean is the **expected global hypergradient** ``E_order[h_T]``,
the second reference. Where the training is chaotic (lr0 0.1) one order's
``h_T`` varies across orders by about its own size, so agreement with the
single-order truth is mostly noise; the expected global is the signal an
estimator can hope to track.

Every estimate is compared with both references by cosine similarity, relative
error ``‖e - ref‖ / ‖ref‖`` and per-component sign agreement (Adam follows
signs). The paper's ``glocal`` is also split by how its window selected DMD modes
(``tol``: eigenvalues within ``dmd_tol`` of 1; ``nearest``: none was, the
nearest one(s) were summed) and run with ``if_empty`` = ``zero`` and ``local``
on the same windows (:data:`IF_EMPTY_VARIANTS`), the choice the paper leaves open.

Problems:

* the quadratic of :mod:`glocal_cli.quadratic` (closed forms: the truth and the
  look-aheads are exact), a sanity row where the DMD model is exact;
* a classifier on Fashion-MNIST trained by SGD with learnable learning rate,
  momentum and weight decay, at two initial learning rates (the paper's
  Fig. 4/5 setting lr0 = 1e-3, and 0.1). The CPU protocol (``profile="cpu"``)
  uses a one-hidden-layer MLP and a reduced horizon T so that it finishes in
  minutes on 2 cores; the paper protocol (``profile="paper"``) uses LeNet and
  T = 20 000 (a GPU job).

A **batch-size noise study** runs one window from the same start state with
several minibatch orders at batch sizes 128, 512 and 2048 and reports the
spread of ``h_t`` across orders relative to its mean, the per-component sign
agreement across orders, and the lag-1 autocorrelation of the order-to-order
deviations and of the increments ``h_t - h_{t-1}`` within the window.

The package computes and returns a :class:`VerifyResult`; writing files is
the command's job (:mod:`glocal_cli.commands.verify`). Its files are its concerns:

* :mod:`~glocal_cli.verify.settings`: what is checked (:class:`VerifySettings`, the profiles);
* :mod:`~glocal_cli.verify.references`: one window's references (:func:`tangent_run`,
  :func:`expected_global`) and every estimator held against them (:func:`evaluate_window`);
* :mod:`~glocal_cli.verify.problems`: the quadratic and the classifier's glocal run, window by window;
* :mod:`~glocal_cli.verify.noise`: the batch-size noise study;
* :mod:`~glocal_cli.verify.summary`: statistics over the windows and the conclusions;
* :mod:`~glocal_cli.verify.render`: ``verify.md`` and ``verify.png``;
* :mod:`~glocal_cli.verify.run`: :func:`run_verify`, all of it.
"""

from __future__ import annotations

from glocal_cli.verify.settings import (  # noqa: F401
    PROFILES, MODELS, ORDER_SEED, MIN_ORDERS, PROBLEMS, IF_EMPTY_VARIANTS, REFERENCES, if_empty_name,
    lookahead_name, VerifySettings, profile_settings,
)
from glocal_cli.verify.references import (  # noqa: F401
    compare, sign_agreement, TangentRun, tangent_run, order_problems, expected_global, evaluate_window,
)
from glocal_cli.verify.problems import (  # noqa: F401
    mlp_task, classifier_task, problem_key, verify_classifier, verify_quadratic, noise_start_only,
)
from glocal_cli.verify.noise import lag1_autocorr, noise_stats, batch_noise  # noqa: F401
from glocal_cli.verify.summary import (  # noqa: F401
    estimator_stats, beats_local, by_selection, summarize, conclusions, VerifyResult, fmt,
)
from glocal_cli.verify.render import settings_text, markdown, figure  # noqa: F401
from glocal_cli.verify.run import run_verify  # noqa: F401


__all__ = [
    "PROFILES",
    "MODELS",
    "ORDER_SEED",
    "MIN_ORDERS",
    "PROBLEMS",
    "IF_EMPTY_VARIANTS",
    "REFERENCES",
    "if_empty_name",
    "lookahead_name",
    "VerifySettings",
    "profile_settings",
    "compare",
    "sign_agreement",
    "TangentRun",
    "tangent_run",
    "order_problems",
    "expected_global",
    "evaluate_window",
    "mlp_task",
    "classifier_task",
    "problem_key",
    "verify_classifier",
    "verify_quadratic",
    "noise_start_only",
    "lag1_autocorr",
    "noise_stats",
    "batch_noise",
    "estimator_stats",
    "beats_local",
    "by_selection",
    "summarize",
    "conclusions",
    "VerifyResult",
    "fmt",
    "settings_text",
    "markdown",
    "figure",
    "run_verify",
]
