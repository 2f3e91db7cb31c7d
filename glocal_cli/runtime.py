"""Backend-dependent choices of a run, resolved once into one frozen record.

Some settings default to ``auto``: the best choice differs between a CPU and an
accelerator (measured in docs/performance.md). They change the numerics a little (the
same hypergradient up to rounding), so a run resolves them ONCE, at its start, into a
:class:`Runtime`; everything downstream reads the record, never the backend. The record
goes into ``metrics.json`` (``runtime``) and every checkpoint, and a checkpoint resumes
only under the same record (``glocal_cli.checkpoint``): a CPU checkpoint does not silently
continue on a GPU with other numerics.

One rule per choice (``auto`` on the CPU / on an accelerator):

* ``val_grad``: how a forward-mode window contracts ``∇ val_loss`` with the tangents:
  ``reverse`` / ``forward`` (on an H200 the σ = 20 validations took 38 ms forward
  against 56 ms reverse; the same on a CPU within noise);
* ``val_batch``: validations batched after the window's scan: ``0`` (in the scan) /
  all the window records (``n_record``);
* ``conv_impl``: LeNet's convolutions: ``patches`` (patches + matmul) / ``lax`` (XLA /
  cuDNN convolutions);
* ``conv_batching``: the convolutions of several seeds in one program (``lax`` only):
  ``grouped`` / ``blockdiag``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

#: The keys a checkpoint and ``metrics.json`` record.
FIELDS = ("backend", "val_grad", "val_batch", "conv_impl", "conv_batching")


def default_backend() -> str:
    """The default JAX backend (``cpu``, ``gpu``, ``tpu``)."""
    import jax

    return jax.default_backend()


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The resolved ``auto`` choices of one run (none of them is ``auto``).

    Attributes:
      backend: the JAX backend they were resolved for.
      val_grad: ``"reverse"`` | ``"forward"``.
      val_batch: ``0`` (validations in the scan) or ``k > 0`` (``k`` at a time after it).
      conv_impl: ``"patches"`` | ``"lax"`` (``""`` where no model is built: a library problem).
      conv_batching: ``"grouped"`` | ``"blockdiag"``.
    """

    backend: str
    val_grad: str
    val_batch: int
    conv_impl: str = ""
    conv_batching: str = "grouped"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in FIELDS}

    def differences(self, saved: dict) -> list:
        """``["name: saved -> this", ...]`` for each field of ``saved`` (a :meth:`to_dict`) that differs."""
        now = self.to_dict()
        return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in FIELDS if saved.get(k) != now[k]]


def val_grad(setting: str, backend: str) -> str:
    """``val_grad``: the setting, or auto: ``reverse`` on a CPU, ``forward`` on an accelerator."""
    if setting != "auto":
        return setting
    return "reverse" if backend == "cpu" else "forward"


def val_batch(setting: int, n_record: int, backend: str) -> int:
    """``val_batch``: the setting (``>= 0``), or auto (-1): ``0`` on a CPU, ``n_record`` on an accelerator."""
    if setting >= 0:
        return setting
    return 0 if backend == "cpu" else n_record


def conv_impl(setting: str, backend: str) -> str:
    """``conv_impl``: the setting, or auto: ``patches`` on a CPU, ``lax`` elsewhere."""
    if setting != "auto":
        return setting
    return "patches" if backend == "cpu" else "lax"


def conv_batching(setting: str, backend: str) -> str:
    """``conv_batching``: the setting, or auto: ``blockdiag`` on a GPU, ``grouped`` elsewhere.

    On one H200, five LeNet seeds in one program took 2.35× / 3.01× / 4.27× the window of
    one seed (none / local / glocal) block-diagonally against 3.53× / 3.92× / 4.89×
    grouped (docs/performance.md). On a CPU the default convolution (patches + matmul) has
    no convolution with mapped weights, so the choice changes nothing there.
    """
    if setting != "auto":
        return setting
    return "blockdiag" if backend == "gpu" else "grouped"


def resolve(hpo, train=None, backend: Optional[str] = None) -> Runtime:
    """The :class:`Runtime` of an :class:`~glocal_cli.hpo.HPOConfig` (and, for ``glocal train``, its
    :class:`~glocal_cli.config.TrainConfig`) on ``backend`` (default: JAX's default backend)."""
    backend = backend or default_backend()
    return Runtime(
        backend=backend,
        val_grad=val_grad(hpo.val_grad, backend),
        val_batch=val_batch(hpo.val_batch, hpo.n_record, backend),
        conv_impl="" if train is None else conv_impl(train.conv_impl, backend),
        conv_batching="grouped" if train is None else conv_batching(train.conv_batching, backend),
    )
