"""Benchmark: LeNet training window in ``lax.scan`` with ``conv_impl="lax"`` vs ``"patches"``.

Usage: ``python -m glocal_cli.models.conv_bench [--steps 50] [--jvp-steps 10] [--batch 128]
[--repeats 1]``

Measures, in one run and on the default JAX backend, the wall time of
 1. a ``steps``-step SGD (momentum, weight decay) training window of LeNet on random
    28x28x1 data inside ``lax.scan`` (each step calls ``jax.grad`` of the loss), and
 2. a ``jvp_steps``-step window pushed forward along 3 tangents (``jax.jacfwd`` w.r.t.
    the 3 hyperparameters learning rate, momentum, weight decay): jvp-of-grad, as in the
    hypergradient code (shorter by default so that the whole run stays under 2 minutes),
for both convolution implementations (compiled ahead of time, then best of ``repeats``
runs), and prints the times, per-step times and the ratios lax / patches.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from glocal_cli.models.lenet import LeNet


def make_window(conv_impl: str):
    """Returns ``window(params, hparams[3], xs[T,B,28,28,1], ys[T,B]) -> final loss``."""
    model = LeNet(conv_impl=conv_impl)

    def loss_fn(params, x, y):
        logits = model.apply(params, x)
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y, 10), -1))

    def window(params, hparams, xs, ys):
        lr, mom, wd = jax.nn.sigmoid(hparams)

        def step(carry, batch):
            p, v = carry
            g = jax.grad(loss_fn)(p, *batch)
            v = jax.tree.map(lambda v, g, p: mom * v + g + wd * p, v, g, p)
            p = jax.tree.map(lambda p, v: p - lr * v, p, v)
            return (p, v), None

        (p, _), _ = jax.lax.scan(step, (params, jax.tree.map(jnp.zeros_like, params)), (xs, ys))
        return loss_fn(p, xs[-1], ys[-1])

    return model, window


def best_time(fn, args, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``jax.jit(fn)``, compiled beforehand."""
    compiled = jax.jit(fn).lower(*args).compile()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="training-window length")
    ap.add_argument("--jvp-steps", type=int, default=10, help="window length for jvp-of-grad")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs after compilation")
    args = ap.parse_args(argv)

    kx, ky = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(kx, (args.steps, args.batch, 28, 28, 1))
    ys = jax.random.randint(ky, (args.steps, args.batch), 0, 10)
    xj, yj = xs[: args.jvp_steps], ys[: args.jvp_steps]
    hparams = jnp.array([-3.0, -2.0, -6.0])  # logits of lr, momentum, weight decay
    print(f"backend {jax.default_backend()}, batch {args.batch}, best of {args.repeats} after compiling")

    results: dict[str, float] = {}
    for impl in ("patches", "lax"):
        model, window = make_window(impl)
        params = jax.jit(model.init)(jax.random.key(1), xs[0])
        results[f"train_{impl}"] = t = best_time(window, (params, hparams, xs, ys), args.repeats)
        print(f"  conv_impl={impl:8s} train window ({args.steps} steps): {t:7.3f} s "
              f"({1e3 * t / args.steps:6.1f} ms/step)", flush=True)
        hyper = jax.jacfwd(window, argnums=1)  # 3 tangents through grad-in-scan
        results[f"jvp_{impl}"] = t = best_time(hyper, (params, hparams, xj, yj), args.repeats)
        print(f"  conv_impl={impl:8s} jvp-of-grad, 3 tangents ({args.jvp_steps} steps): {t:7.3f} s "
              f"({1e3 * t / args.jvp_steps:6.1f} ms/step)", flush=True)
    for what, label in (("train", "train window"), ("jvp", "jvp-of-grad (3 tangents)")):
        results[f"{what}_ratio"] = r = results[f"{what}_lax"] / results[f"{what}_patches"]
        print(f"ratio lax / patches, {label}: {r:.1f}x")
    return results


if __name__ == "__main__":
    main()
