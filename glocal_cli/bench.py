"""Runtime benchmark: the paper's Table 4 (none / local / glocal / global) on the machine at hand.

LeNet on Fashion-MNIST with the paper's settings (τ 50, σ 20, m 10, batch 128,
10 % validation held out and evaluated full-batch). Every method runs through
the path ``glocal train`` runs (the runner :func:`glocal_cli.train.make_runner` builds, one seed), compiled
first (compile time reported separately), then timed window by window in
round-robin order (none, local, glocal, W, V, none, ...) so that load from
other processes hits every method alike; the median per method is reported.

Two components are timed alongside, in the same run:

* ``W``: a window of τ steps with the q forward-mode tangents and no
  validation evaluation (``methods.chunk_fn(method, 0)``, a chunk of global's retraining);
* ``V``: one validation evaluation with tangents, ``h = ∇ℓ̃(θ)·Z``
  (a full-batch gradient of the validation loss contracted with the q tangents).

so that ``local ≈ W + V`` and ``glocal ≈ W + σ V``; the floor of glocal/local is
``(W + σV) / (W + V)`` and ``glocal_over_local_floor`` is the measured ratio
divided by that floor (1.0 = no overhead beyond the σ evaluations).

``global`` retrains from θ_0 for all T steps with tangents at every outer
step: it is timed over one outer step with a short horizon ``global_steps`` and
extrapolated linearly to ``S × T`` inner steps with tangents (S = T / τ);
the output says so.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import yaml

from glocal_cli import settings
from glocal_cli.config import TrainConfig
from glocal_cli.errors import UserError
from glocal_cli.settings import section, setting

PAPER_TABLE4 = {"none": 11.4, "local": 25.1, "glocal": 66.7, "global": 4681.1}  # seconds, A100
METHOD_ORDER = ("none", "local", "glocal", "global")


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs: a run config (paper defaults) and the bench's own settings.

    ``train.hpo.steps`` is T of the extrapolated full run (the paper's 20 000);
    :func:`bench_settings` gives the ``--quick`` variant.
    """

    train: TrainConfig = section(TrainConfig, "dataset, batch size, validation split, tau / sigma / m and T")
    windows: int = setting(3, "timed windows per method (after the compiling one)")
    global_steps: int = setting(100, "T of the timed global outer step (extrapolated)")
    quick: bool = setting(False, "reduced settings, under two minutes on a 2-core CPU")
    seed_counts: tuple = setting((1, 5), "numbers of seeds S timed as one program (SeedGroupRunner); () skips")
    train_windows: int = setting(5, "windows of the `glocal train` run timed against the bench per method; 0 skips")
    variants: tuple = setting((), "setting overrides timed for local and glocal windows, e.g. val_chunk=1000;val_batch=5")

    def __post_init__(self) -> None:
        for name in ("windows", "global_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        given = self.seed_counts
        counts = tuple(settings.parse_list(given, "seed-counts") if isinstance(given, str) else (int(x) for x in given))
        if any(c < 1 for c in counts):
            raise UserError(f"seed_counts must be numbers of seeds >= 1, got {list(counts)}")
        object.__setattr__(self, "seed_counts", counts)
        if self.train_windows < 0:
            raise UserError(f"train_windows must be >= 0 (0: skip), got {self.train_windows}")
        object.__setattr__(self, "variants", tuple(self.variants))
        from glocal_cli.config import from_mapping

        for v in self.variants:
            from_mapping(parse_variant(v), self.train)  # raises on a malformed or unknown setting


def parse_variant(text: str) -> dict:
    """``"val_chunk=1000;val_batch=5"`` -> ``{"val_chunk": "1000", "val_batch": "5"}`` (settings of ``glocal train``)."""
    out = {}
    for part in str(text).split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--variant {text!r}: expected name=value[;name=value], e.g. val_chunk=1000")
        out[key.strip()] = yaml.safe_load(value.strip()) if value.strip() else ""
    if not out:
        raise UserError(f"--variant {text!r} is empty")
    return out


#: What ``--quick`` changes.
QUICK = {"tau": 20, "sigma": 10, "m": 4, "val_fraction": 0.02, "windows": 1, "global_steps": 40, "quick": True}


def bench_settings(quick: bool = False, steps: Optional[int] = None, data_dir: str = "data/raw", **kw) -> BenchSettings:
    """Paper settings, or small ones for ``--quick`` (under two minutes on a 2-core CPU).

    ``steps``: inner steps timed per method (rounded up to whole windows).
    ``kw``: further settings by name (``tau``, ``windows``) or as sections (``train={...}``).
    """
    values = {**(QUICK if quick else {}), "data_dir": data_dir, **kw}
    base = settings.from_mapping(BenchSettings, values)
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}")
        base = dataclasses.replace(base, windows=max(1, -(-steps // base.train.hpo.tau)))
    return base


def _block(x):
    return jax.block_until_ready(x)


def _timed(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build_lenet_task(s: BenchSettings, steps: int):
    """(task, splits) for LeNet / ``s.train.dataset`` with the bench's settings, over ``steps`` inner steps."""
    from glocal_cli.tasks import build_task
    from glocal_cli.train import load_splits

    cfg = dataclasses.replace(s.train, model="lenet", hpo=dataclasses.replace(s.train.hpo, steps=steps))
    splits = load_splits(cfg)
    return build_task(cfg, splits), splits


def _runner(cfg: TrainConfig, task):
    """``(runner, state)``: the group of one seed that ``glocal train`` would run for ``cfg``
    (:func:`glocal_cli.train.make_runner`, under the runtime ``cfg`` resolves to)."""
    from glocal_cli import train
    from glocal_cli.runtime import resolve

    runner = train.make_runner([cfg], [task.problem], resolve(cfg.resolved_hpo(), cfg))
    return runner, runner.init([task.phi0])


def _timer(runner, state) -> Callable[[], None]:
    """One window of ``runner``, from ``state`` on (the state advances with each call), waited for."""
    box = [state]

    def one():
        box[0], _ = runner.run_window(box[0])
        _block(box[0])

    return one


def _components(s: BenchSettings, task, runtime) -> Dict[str, Callable[[], None]]:
    """``W`` (τ steps with the q tangents, no validation: a chunk of global's retraining, as the runner
    compiles it) and ``V`` (one validation with tangents, ``h = ∇ℓ̃(θ)·Z``, on W's tangents: call W first)."""
    from glocal_cli.hypergrad import tangent_hypergrad
    from glocal_cli.methods import chunk_fn

    prob, h = task.problem, s.train.hpo
    local = _runner(_lenet_cfg(s, 2 * h.tau, method="local"), task)[0]
    w_fn = local.program(chunk_fn(local.method, 0))
    v_fn = jax.jit(lambda st, d, Z: tangent_hypergrad(prob.val_loss, st, Z, d, runtime.val_grad)[0])
    one = lambda x: jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], x)  # noqa: E731  (a seed axis)
    args = (one(prob.init_state), one(jnp.asarray(task.phi0)), one(prob.batches(0, h.tau)), local.data)
    tangents = {}

    def run_w():  # its first call (the compiling one) leaves the tangents V contracts with
        out = w_fn(*args, None)
        _block(out.state)
        tangents.setdefault("Z", jax.tree_util.tree_map(lambda a: a[0], out.tangents))

    return {"W": run_w, "V": lambda: _block(v_fn(prob.init_state, prob.data, tangents["Z"]))}


V_REPEATS = 3  # V is short: timed this many times a round


def _time_round_robin(timers: Dict[str, Callable[[], None]], windows: int, say) -> tuple:
    """``(first, times)``: each timer's compiling call, then ``windows`` rounds of every timer in turn
    (round-robin, so that load from other processes hits them alike)."""
    say("compiling " + " / ".join(timers))
    first = {k: _timed(fn) for k, fn in timers.items()}
    times = {k: [] for k in timers}
    for r in range(windows):
        say(f"timing window {r + 1}/{windows}")
        for k, fn in timers.items():
            times[k].extend(_timed(fn) for _ in range(V_REPEATS if k == "V" else 1))
    return first, times


def run_bench(s: BenchSettings, progress: Optional[Callable[[str], None]] = None) -> Dict:
    """Run the benchmark; returns the results dict (also what ``--out`` writes)."""
    say = progress or (lambda msg: None)
    from glocal_cli.runtime import resolve

    h = s.train.resolved_hpo()
    n_windows_run = 1 + s.windows  # compiling window + timed ones
    steps = max(n_windows_run * h.tau, h.tau * 2)
    task, splits = build_lenet_task(s, steps)
    q = int(task.phi0.shape[0])
    runtime = resolve(h, s.train)

    # each method as glocal train runs it: a group of one seed built by train.make_runner
    timers = {m: _timer(*_runner(_lenet_cfg(s, steps, method=m), task)) for m in ("none", "local", "glocal")}
    timers.update(_components(s, task, runtime))
    first, times = _time_round_robin(timers, s.windows, say)
    med = {k: statistics.median(v) for k, v in times.items()}
    compile_s = {k: max(first[k] - med[k], 0.0) for k in first}

    # global: one outer step over a short horizon, extrapolated to S x T.
    say(f"timing global (one outer step, T={s.global_steps})")
    g_steps = max(h.tau, (s.global_steps // h.tau) * h.tau)
    g_runner, g_state = _runner(_lenet_cfg(s, g_steps, method="global", global_outer_steps=2), task)
    g_first = _timed(lambda: _block(g_runner.run_window(g_state)[0].inner))
    g_time = _timed(lambda: _block(g_runner.run_window(g_state)[0].inner))
    compile_s["global"] = max(g_first - g_time, 0.0)
    per_step_global = g_time / g_steps  # seconds per inner step with tangents (global path)
    S = h.steps // h.tau

    per1000 = {m: med[m] * 1000.0 / h.tau for m in ("none", "local", "glocal")}
    per1000["global"] = per_step_global * S * 1000.0  # S retrains of every step, per 1000 run steps
    run_T = {m: per1000[m] * h.steps / 1000.0 for m in METHOD_ORDER}
    return {
        "settings": settings.to_flat(s),  # flat: steps is T of the extrapolated run
        "q": q,
        "n_val": int(len(splits.val_x)),
        **_device(),
        "runtime": runtime.to_dict(),
        "window_s": {m: med[m] for m in ("none", "local", "glocal")},
        "window_samples_s": times,
        "W_s": med["W"],
        "V_s": med["V"],
        "val_evals_per_window": {"none": 0, "local": 1, "glocal": h.sigma},
        "seconds_per_1000_steps": per1000,
        "run_seconds_extrapolated": run_T,
        "compile_s": compile_s,
        "global_measured": {"steps": g_steps, "seconds": g_time, "outer_steps_extrapolated": S,
                            "note": f"one global outer step timed at T={g_steps}, extrapolated linearly to "
                                    f"S={S} outer steps x T={h.steps} inner steps"},
        **_ratios(med, per1000, h.sigma),
        "paper_table4_s": PAPER_TABLE4,
        "seeds": time_seed_groups(s, say) if s.seed_counts else None,
        "train": time_train(s, {m: med[m] for m in ("none", "local", "glocal")}, say) if s.train_windows else None,
        "variants": time_variants(s, say) if s.variants else None,
        "paper_ratios": {"local_over_none": 25.1 / 11.4, "glocal_over_local": 66.7 / 25.1,
                         "glocal_over_none": 66.7 / 11.4, "global_over_none": 4681.1 / 11.4},
    }


def _device() -> Dict:
    import os

    dev = jax.devices()[0]
    return {"device": f"{dev.platform}:{dev.device_kind}", "cpu_count": os.cpu_count()}


def _ratios(med: Dict[str, float], per1000: Dict[str, float], sigma: int) -> Dict[str, float]:
    """The methods' time ratios and glocal/local against its floor ``(W + σV) / (W + V)``."""
    W, V = med["W"], med["V"]
    floor = (W + sigma * V) / (W + V)
    glocal_over_local = med["glocal"] / med["local"]
    return {
        "local_over_none": med["local"] / med["none"],
        "glocal_over_local": glocal_over_local,
        "glocal_over_none": med["glocal"] / med["none"],
        "global_over_none": per1000["global"] / per1000["none"],
        "glocal_over_local_floor": glocal_over_local / floor,
        "floor_glocal_over_local": floor,
        "W_over_none": W / med["none"],
        "V_over_none_window": V / med["none"],
    }


def _lenet_cfg(s: BenchSettings, steps: int, **hpo) -> TrainConfig:
    return dataclasses.replace(s.train, model="lenet", hpo=dataclasses.replace(s.train.hpo, steps=steps, **hpo))


def time_seed_groups(s: BenchSettings, say: Callable[[str], None] = lambda m: None,
                     methods=("none", "local", "glocal")) -> Dict:
    """Window time of S seeds trained as one program (:class:`~glocal_cli.runner.SeedGroupRunner`), S in ``seed_counts``.

    Seeds 0 .. S−1 of the bench's setting (each its own split, initialization and
    batch order), methods none / local / glocal; one compiling window, then
    ``windows`` timed ones (median). Returns ``{"window_s": {method: {S: s}},
    "time_over_one": {method: {S: t(S) / t(1)}}, "seed_steps_per_s": ..., "seed_runs_per_hour": ...}``
    (a seed run: T = ``train.hpo.steps`` inner steps). The seeds' convolutions are
    batched as ``train.conv_batching`` says (:class:`~glocal_cli.runner.SeedGroupRunner`).
    """
    from glocal_cli import train
    from glocal_cli.runtime import resolve
    from glocal_cli.tasks import build_task

    h = s.train.resolved_hpo()
    steps = (1 + s.windows) * h.tau
    runtime = resolve(h, s.train)
    tasks, datasets = [], {}
    for seed in range(max(s.seed_counts)):
        cfg = _lenet_cfg(s, steps, seed=seed)
        tasks.append((cfg, build_task(cfg, train.load_splits(cfg, datasets), runtime)))
    window_s: Dict[str, Dict[int, float]] = {m: {} for m in methods}
    errors: Dict[str, str] = {}
    for n in s.seed_counts:
        for method in window_s:
            say(f"timing {n} seed(s) in one program, {method}")
            cfgs = [dataclasses.replace(c, hpo=dataclasses.replace(c.hpo, method=method)) for c, _ in tasks[:n]]
            group = train.make_runner(cfgs, [t.problem for _, t in tasks[:n]], resolve(cfgs[0].resolved_hpo(), cfgs[0]))
            state = [group.init([t.phi0 for _, t in tasks[:n]])]
            one = _timer(group, state)
            try:
                one()  # compiles
                window_s[method][n] = statistics.median(_timed(one) for _ in range(s.windows))
            except Exception as e:  # e.g. out of device memory: recorded, the other cells still run
                errors[f"{method}/S={n}"] = _error_text(e)
            del group, state
    runs = h.steps / h.tau  # windows per seed run of T steps
    return {
        "window_s": window_s,
        "errors": errors,
        "time_over_one": {m: {n: v[n] / v[1] for n in v} for m, v in window_s.items() if 1 in v},
        "seed_steps_per_s": {m: {n: n * h.tau / v[n] for n in v} for m, v in window_s.items()},
        "seed_runs_per_hour": {m: {n: 3600.0 * n / (v[n] * runs) for n in v} for m, v in window_s.items()},
    }


def _error_text(e: Exception) -> str:
    """One line naming a failure of a timed cell (the first line of the message, cut to 200 characters)."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:200]}"


def time_train(s: BenchSettings, window_s: Dict[str, float], say: Callable[[str], None] = lambda m: None,
               methods=("none", "local", "glocal")) -> Dict:
    """`glocal train` (:func:`~glocal_cli.train.run_training`) against the bench's window, per method.

    One run of ``train_windows`` windows per method with the bench's setting and
    the run defaults (evaluation and checkpoint every ``eval_every`` /
    ``checkpoint_every`` windows), written to a temporary folder. ``window_over_bench``
    = the run's steady window (``metrics.json`` ``window_s``: after the compiling
    window, host work included) / the bench's median window; ``wall_over_bench`` =
    the run's wall time without compilation / (windows × the bench's window).
    """
    import tempfile

    from glocal_cli.train import run_training

    h = s.train.hpo
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            say(f"timing glocal train, {method}, {s.train_windows} windows")
            cfg = dataclasses.replace(_lenet_cfg(s, s.train_windows * h.tau, method=method), out=f"{tmp}/{method}")
            try:
                m = run_training(cfg)
            except Exception as e:  # recorded, the other methods still run
                out[method] = {"windows": s.train_windows, "error": _error_text(e)}
                continue
            bench_total = window_s[method] * s.train_windows
            out[method] = {
                "windows": s.train_windows, "wall_s": m["wall_s"], "compile_s": m["compile_s"], "window_s": m["window_s"],
                "window_over_bench": m["window_s"] / window_s[method], "wall_over_bench": m["train_s"] / bench_total,
                "eval_every": cfg.eval_every, "checkpoint_every": cfg.checkpoint_every, "status": m["status"],
            }
    return out


def time_variants(s: BenchSettings, say: Callable[[str], None] = lambda m: None) -> Dict:
    """local and glocal window times (median of ``windows`` after compiling) per setting override in ``variants``.

    Each variant is ``"name=value;name=value"`` applied to the bench's run config
    (e.g. ``val_chunk=1000``, ``val_batch=5``); ``"baseline"`` is the config as is.
    """
    from glocal_cli.config import from_mapping

    out = {}
    steps = (1 + s.windows) * s.train.hpo.tau
    for text in ("",) + tuple(s.variants):
        name = text or "baseline"
        base = from_mapping(parse_variant(text), s.train) if text else s.train
        vs = dataclasses.replace(s, train=base)
        task, _ = build_lenet_task(vs, steps)
        times = {}
        try:
            for method in ("local", "glocal"):
                say(f"timing variant {name}: {method}")
                cfg = _lenet_cfg(vs, steps, method=method)
                runner, state = _runner(cfg, task)
                one = _timer(runner, [state])
                one()
                times[method] = statistics.median(_timed(one) for _ in range(s.windows))
        except Exception as e:  # e.g. out of device memory: recorded, the other variants still run
            out[name] = {"error": _error_text(e)}
            continue
        out[name] = {"local_s": times["local"], "glocal_s": times["glocal"],
                     "glocal_over_local": times["glocal"] / times["local"]}
    return out


def results_table(res: Dict):
    """A rich Table of the results."""
    from rich.table import Table

    s = res["settings"]
    title = (f"glocal bench: LeNet/{s['dataset']} τ={s['tau']} σ={s['sigma']} m={s['m']} batch={s['batch_size']} "
             f"n_val={res['n_val']} on {res['device']}" + ("  [--quick: reduced settings]" if s["quick"] else ""))
    t = Table(title=title)
    for col in ("method", "s/window", "s/1k steps", f"T={s['steps']} run (s)", "×none",
                "compile s", "paper s", "paper ×none"):
        t.add_column(col, justify="right" if col != "method" else "left")
    none = res["seconds_per_1000_steps"]["none"]
    for m in METHOD_ORDER:
        win = res["window_s"].get(m)
        t.add_row(
            m + ("*" if m == "global" else ""),
            "—" if win is None else f"{win:.3f}",
            f"{res['seconds_per_1000_steps'][m]:.4g}",
            f"{res['run_seconds_extrapolated'][m]:.4g}",
            f"{res['seconds_per_1000_steps'][m] / none:.2f}",
            f"{res['compile_s'].get(m, float('nan')):.1f}",
            f"{PAPER_TABLE4[m]:.1f}",
            f"{PAPER_TABLE4[m] / PAPER_TABLE4['none']:.2f}",
        )
    return t


def summary_lines(res: Dict) -> list[str]:
    """Plain-text ratio summary under the table."""
    return [
        f"W (window with tangents, no validation) = {res['W_s']:.3f} s; V (one validation evaluation with "
        f"tangents) = {res['V_s']:.3f} s",
        f"local/none = {res['local_over_none']:.2f} (paper 2.20); glocal/local = {res['glocal_over_local']:.2f} "
        f"(paper 2.66); glocal/none = {res['glocal_over_none']:.2f} (paper 5.85)",
        f"floor (W + σV)/(W + V) = {res['floor_glocal_over_local']:.2f}; glocal/local over the floor = "
        f"{res['glocal_over_local_floor']:.2f}",
        "* global: " + res["global_measured"]["note"],
    ] + extra_lines(res)


def extra_lines(res: Dict) -> list[str]:
    """The seeds, train-vs-bench and variant results as text lines."""
    lines = []
    seeds = res.get("seeds")
    if seeds:
        for m, v in seeds["window_s"].items():
            parts = [f"S={n}: {t:.3f} s/window ({seeds['seed_steps_per_s'][m][n]:.0f} seed-steps/s)" for n, t in v.items()]
            ratio = "; ".join(f"t(S={n})/t(1) = {r:.2f}" for n, r in seeds.get("time_over_one", {}).get(m, {}).items() if n != 1)
            lines.append(f"seeds in one program, {m}: " + ", ".join(parts) + (f"; {ratio}" if ratio else ""))
        for cell, err in seeds.get("errors", {}).items():
            lines.append(f"seeds in one program, {cell}: failed ({err})")
    train = res.get("train")
    if train:
        for m, v in train.items():
            if "error" in v:
                lines.append(f"glocal train {m}: failed ({v['error']})")
                continue
            lines.append(f"glocal train {m} ({v['windows']} windows): steady window {v['window_s']:.3f} s = "
                         f"{v['window_over_bench']:.2f}x the bench's; wall without compile {v['wall_over_bench']:.2f}x")
    variants = res.get("variants")
    if variants:
        for name, v in variants.items():
            if "error" in v:
                lines.append(f"variant {name}: failed ({v['error']})")
                continue
            lines.append(f"variant {name}: local {v['local_s']:.3f} s, glocal {v['glocal_s']:.3f} s, "
                         f"glocal/local = {v['glocal_over_local']:.2f}")
    return lines


def write_results(res: Dict, path) -> None:
    """Write ``res`` as JSON at ``path``, with the software and code versions (``provenance``)."""
    from glocal_cli import atomic, provenance

    atomic.write_json(path, {**res, "provenance": provenance.collect()})
