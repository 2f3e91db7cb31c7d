"""``run_verify``: every problem of the settings, checked window by window, into one :class:`VerifyResult`."""

from __future__ import annotations

import time
from typing import Callable, Optional

import jax

from glocal_cli import settings
from glocal_cli.verify.settings import VerifySettings
from glocal_cli.verify.noise import batch_noise
from glocal_cli.verify.problems import noise_start_only, verify_classifier, verify_quadratic
from glocal_cli.verify.summary import VerifyResult, summarize


def run_verify(s: VerifySettings, say: Callable[[str], None] = lambda m: None,
               on_partial: Optional[Callable[[VerifyResult], None]] = None) -> VerifyResult:
    """Run the protocol ``s`` (quadratic, classifier at every lr0, noise study) and return the results.

    ``on_partial(result)`` (optional) gets the results so far (``complete=False``) after
    every classifier window and every study, so that a run cut short keeps them.
    """
    rows, noise, secs, live = [], [], {}, []
    t_all = time.perf_counter()
    flat = {**settings.to_flat(s), "outer_lr": s.train.resolved_outer_lr(), "checked_windows": list(s.checked_windows())}
    device = jax.devices()[0].device_kind

    def emit(*_) -> None:
        if on_partial is not None:
            done = rows + live
            on_partial(VerifyResult(flat, done, summarize(done), noise, dict(secs), device, complete=False))

    if "quadratic" in s.problems:
        say("quadratic (closed forms)")
        t0 = time.perf_counter()
        rows += verify_quadratic(s)
        secs["quadratic"] = time.perf_counter() - t0
        emit()
    for lr0 in s.lr0s if ("classifier" in s.problems or "noise" in s.problems) else ():
        t0 = time.perf_counter()
        live.clear()
        r, noise_start = verify_classifier(s, lr0, say, on_row=lambda row: (live.append(row), emit())) \
            if "classifier" in s.problems else ([], None)
        live.clear()
        secs[f"classifier lr0={lr0:g}"] = time.perf_counter() - t0
        rows += r
        if "noise" in s.problems:
            if noise_start is None:
                noise_start = noise_start_only(s, lr0)
            t0 = time.perf_counter()
            noise += batch_noise(s, lr0, noise_start, say)
            secs[f"noise lr0={lr0:g}"] = time.perf_counter() - t0
            emit()
    secs["total"] = time.perf_counter() - t_all
    return VerifyResult(flat, rows, summarize(rows), noise, secs, device)
