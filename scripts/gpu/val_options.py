"""Cost and accuracy of the validation options (val_chunk, val_precision, val_grad) on LeNet / Fashion-MNIST.

Usage: ``PYTHONPATH=. python scripts/gpu/val_options.py --data-dir ../shared/datasets [--snapshots 4]``

1. Trains LeNet (paper split: 54 000 train / 6 000 validation, batch 128, SGD with lr0 0.05,
   momentum 0.1, weight decay 1e-3) for ``--train-steps`` plain steps, then runs
   ``--tangent-steps`` steps with the 3 forward-mode tangents and keeps ``--snapshots``
   consecutive (state, Z) pairs: the σ recorded states of a glocal window.
2. Times one σ-batched validation evaluation ``h = ∇ℓ_val(θ_t)·Z_t`` of all snapshots
   (``lax.map(batch_size=σ)``, as ``forward_window(val_batch=σ)`` does after its scan) for
   val_chunk 1000 / whole set, val_precision float32 / bfloat16, val_grad reverse / forward
   (median of ``--repeats`` runs after a compiling one).
3. Reports the relative error of ``h`` of each option against the default (chunk 1000,
   float32, reverse), per snapshot: ``‖h − h_ref‖ / ‖h_ref‖``.
4. Compiles (does not run) the σ = 20 evaluation (whole set in one chunk, and the default
   1000-example chunks) and reports XLA's buffer estimate on this backend
   (``memory_analysis().temp_size_in_bytes``); ``--conv-impl lax --memory-only`` compiles the
   GPU's convolutions (a guide to the GPU's memory, not a GPU measurement).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from glocal_cli.config import from_mapping
from glocal_cli.hypergrad import make_train_fn, make_window_fn, tangent_hypergrad
from glocal_cli.runtime import resolve
from glocal_cli.tasks import build_task
from glocal_cli.train import load_splits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--snapshots", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--tangent-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--memory-sigma", type=int, default=20)
    ap.add_argument("--conv-impl", default="auto", help="patches (CPU default) | lax (the GPU's convolutions)")
    ap.add_argument("--memory-only", action="store_true", help="only the buffer estimate (no training, no timing)")
    args = ap.parse_args()

    base = from_mapping(dict(dataset="fmnist", data_dir=args.data_dir, lr0=0.05, steps=20_000,
                             conv_impl=args.conv_impl))
    splits = load_splits(base)
    n_val = len(splits.val_x)
    tasks = {}
    for chunk, prec in itertools.product((1000, n_val), ("float32", "bfloat16")):
        tasks[chunk, prec] = build_task(dataclasses.replace(base, val_chunk=chunk, val_precision=prec), splits)
    ref_task = tasks[1000, "float32"]
    prob = ref_task.problem
    phi = jnp.asarray(ref_task.phi0)

    if args.memory_only:
        args.train_steps, args.tangent_steps, args.snapshots = 1, 1, 1
    t0 = time.perf_counter()
    state, _ = make_train_fn(prob.step)(prob.init_state, phi, prob.batches(0, args.train_steps), prob.data)
    one_step = make_window_fn(prob.step, prob.val_loss, 0, "forward")
    out = one_step(state, phi, prob.batches(args.train_steps, args.tangent_steps), prob.data)
    state, Z = out.state, out.tangents
    states, Zs = [], []
    start = args.train_steps + args.tangent_steps
    for k in range(args.snapshots):
        out = one_step(state, phi, prob.batches(start + k, 1), prob.data, Z)
        state, Z = out.state, out.tangents
        states.append(state)
        Zs.append(Z)
    stack = lambda trees: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    states, Zs = stack(states), stack(Zs)
    prep_s = time.perf_counter() - t0
    sigma = args.snapshots

    def v_fn(task, val_grad, n):
        vl = task.problem.val_loss
        return jax.jit(lambda ss, zs, d: lax.map(lambda x: tangent_hypergrad(vl, x[0], x[1], d, val_grad), (ss, zs),
                                                batch_size=n))

    results, hs, failed = [], {}, []
    for (chunk, prec), val_grad in itertools.product(tasks, ("reverse", "forward")):
        if args.memory_only:
            break
        fn = v_fn(tasks[chunk, prec], val_grad, sigma)
        try:
            t = time.perf_counter()
            h, v = jax.block_until_ready(fn(states, Zs, prob.data))
            first = time.perf_counter() - t
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                jax.block_until_ready(fn(states, Zs, prob.data))
                times.append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 -- e.g. out of memory: recorded, the other settings still run
            failed.append({"val_chunk": chunk, "val_precision": prec, "val_grad": val_grad,
                           "error": str(e).splitlines()[0][:300]})
            print(json.dumps(failed[-1]), flush=True)
            continue
        hs[chunk, prec, val_grad] = (np.asarray(h, np.float64), np.asarray(v, np.float64))
        results.append({"val_chunk": chunk, "val_precision": prec, "val_grad": val_grad,
                        "seconds": statistics.median(times), "samples_s": times, "first_s": first})
        print(json.dumps(results[-1]), flush=True)

    h_ref, v_ref = hs.get((1000, "float32", "reverse"), (None, None))
    for r in results if h_ref is not None else []:
        h, v = hs[r["val_chunk"], r["val_precision"], r["val_grad"]]
        rel = np.linalg.norm(h - h_ref, axis=1) / np.linalg.norm(h_ref, axis=1)
        r["h_rel_err_vs_default"] = {"max": float(rel.max()), "median": float(np.median(rel))}
        r["h_component_rel_err_max"] = float(np.max(np.abs(h - h_ref) / np.abs(h_ref)))
        r["val_loss_rel_err_max"] = float(np.max(np.abs(v - v_ref) / np.abs(v_ref)))
        r["per_state_seconds"] = r["seconds"] / sigma

    # XLA's buffer estimate of the sigma=20 whole-set evaluation (compiled for this backend, not run).
    memory = {}
    ms = args.memory_sigma
    big = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[:1], (ms,) + x.shape[1:]), (states, Zs))
    for chunk, prec, val_grad in itertools.product((1000, n_val), ("float32", "bfloat16"), ("reverse", "forward")):
        if chunk == 1000 and (prec, val_grad) != ("float32", "reverse"):
            continue
        fn = v_fn(tasks[chunk, prec], val_grad, ms)
        try:
            ma = fn.lower(big[0], big[1], prob.data).compile().memory_analysis()
            memory[f"chunk {chunk}/{prec}/{val_grad}"] = {"temp_GB": ma.temp_size_in_bytes / 1e9,
                                                          "argument_GB": ma.argument_size_in_bytes / 1e9}
        except Exception as e:  # noqa: BLE001
            memory[f"chunk {chunk}/{prec}/{val_grad}"] = {"error": str(e).splitlines()[0][:300]}
    stats = jax.devices()[0].memory_stats() or {}
    print(json.dumps({"device": str(jax.devices()[0]), "n_val": n_val, "snapshots": sigma,
                      "train_steps": args.train_steps, "prep_s": prep_s, "q": int(phi.shape[0]),
                      "results": results, "failed": failed,
                      "peak_device_GB": stats.get("peak_bytes_in_use", float("nan")) / 1e9, "memory_sigma": ms, "conv_impl": resolve(base.hpo, base).conv_impl, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
