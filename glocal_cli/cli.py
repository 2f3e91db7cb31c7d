"""The ``glocal`` command line: one command per pipeline stage.

Bad input (unknown names, missing files, bad values) ends with a one-line
``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from glocal_cli.errors import Interrupted, UserError

app = typer.Typer(
    name="glocal",
    help="Gradient-based HPO with glocal hypergradients (Hankel DMD), local and global baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command()
def download(
    name: str = typer.Argument(..., help="mnist, fashion_mnist (fmnist), kmnist, svhn, cifar10, cifar100"),
    source: str = typer.Option("tfds", help="'tfds' (needs a network) or a folder of the original files"),
    out: Path = typer.Option(Path("data/raw"), help="output folder for <name>.npz and <name>.json"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check the official checksums"),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="when the source lacks the files, record 'not run' outputs and exit 0 (dvc.yaml uses this)"),
):
    """Prepare a dataset as one compact array file (from tensorflow-datasets or the original files)."""
    from stages import download as stage

    stage.run(name=name, source=source, out=out, verify=verify, missing_ok=missing_ok)


@app.command()
def imbalance(
    dataset: str = typer.Option("cifar10", help="cifar10 or cifar100 (any prepared dataset works)"),
    factor: float = typer.Option(50.0, help="imbalance factor n_max / n_min, > 1"),
    seed: int = typer.Option(0, help="seed of the validation draw and the subsampling"),
    data_dir: Path = typer.Option(Path("data/raw"), help="prepared datasets or a folder of original files (default data/raw)"),
    out: Path = typer.Option(Path("data/imbalanced"), help="output folder"),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="when the dataset was not downloaded ('not run'), record 'not run' and exit 0"),
):
    """Build the long-tailed training set (Cui et al. 2019) and the balanced 1 000-example validation set."""
    from stages import imbalance as stage

    stage.run(dataset=dataset, factor=factor, seed=seed, data_dir=data_dir, out=out, missing_ok=missing_ok)


@app.command()
def train(
    dataset: Optional[str] = typer.Option(None, help="dataset name (default fashion_mnist)"),
    method: Optional[str] = typer.Option(None, help="none | local | glocal | global | sgld (default glocal; sgld is derived from the Kim & Hospedales abstract, docs/sgld.md)"),
    model: Optional[str] = typer.Option(None, help="lenet | wrn28_2 | wrn16_2 (default lenet)"),
    task: Optional[str] = typer.Option(None, help="optimizer | reweight (default optimizer)"),
    steps: Optional[int] = typer.Option(None, help="inner training steps T (default 20000)"),
    tau: Optional[int] = typer.Option(None, help="inner steps per hyperparameter update (default 50)"),
    sigma: Optional[int] = typer.Option(None, help="local hypergradients fed to DMD (default 20)"),
    m: Optional[int] = typer.Option(None, "--m", help="Hankel time-delay stacks (default 10)"),
    seed: Optional[int] = typer.Option(None, help="fixes split, initialization and batch order (default 0)"),
    lr0: Optional[float] = typer.Option(None, help="initial inner learning rate (default 1e-3)"),
    momentum0: Optional[float] = typer.Option(None, help="initial momentum (default 0.1)"),
    weight_decay0: Optional[float] = typer.Option(None, help="initial weight decay (default 1e-3)"),
    learn: Optional[str] = typer.Option(None, help="learned hyperparameters, e.g. lr,momentum,weight_decay"),
    outer_lr: Optional[float] = typer.Option(None, help="Adam learning rate on phi (default: 0.1 MNIST-family optimizer task, 0.01 reweight / CIFAR)"),
    batch_size: Optional[int] = typer.Option(None, help="minibatch size (default 128)"),
    estimator: Optional[str] = typer.Option(
        None, help="method glocal: glocal (paper Eq. 20, default) | glocal-strict | glocal-horizon | glocal-robust | mean | local"
    ),
    dmd_tol: Optional[float] = typer.Option(None, help="|lambda - 1| of 'near 1' (default: 0.1 glocal, 0.02 strict/horizon)"),
    dmd_rank_rtol: Optional[float] = typer.Option(None, help="SVD truncation of the Hankel fit (default 1e-10: exact DMD)"),
    grad_mode: Optional[str] = typer.Option(None, help="forward | reverse | auto (by number of hyperparameters)"),
    global_outer_steps: Optional[int] = typer.Option(None, help="outer steps of the global method, >= 1 (default T / tau)"),
    imbalance_factor: Optional[float] = typer.Option(None, help="reweight task: long-tail factor, > 1 (default 50)"),
    imbalance_exponent: Optional[str] = typer.Option(None, help="reweight task: cui (c/(C-1), default) | paper (c/C)"),
    reweight_loss: Optional[str] = typer.Option(None, help="reweight task: mean (default) | sum (the paper's literal sum_i L_i mu(L_i))"),
    sgld_temperature: Optional[float] = typer.Option(None, help="sgld: temperature of the summed training loss (default 1: posterior)"),
    sgld_step_size: Optional[float] = typer.Option(None, help="sgld: SGLD step eta (default lr0; 0.1 for reweight)"),
    sgld_burn_in: Optional[int] = typer.Option(None, help="sgld: steps at each window's start not averaged (default 0)"),
    sgld_thin: Optional[int] = typer.Option(None, help="sgld: average every thin-th step (default 1)"),
    sgld_damping: Optional[float] = typer.Option(None, help="sgld: damping delta of the z recurrence (default 0)"),
    sgld_persist_z: Optional[bool] = typer.Option(None, "--sgld-persist-z/--sgld-reset-z", help="sgld: carry z across windows (default: reset)"),
    sgld_val_batch: Optional[int] = typer.Option(None, help="sgld: validation examples per step (default batch size)"),
    val_fraction: Optional[float] = typer.Option(None, help="held-out validation fraction (default 0.1)"),
    val_batch: Optional[int] = typer.Option(None, help="validations batched after the window's scan (default -1: auto; 0: in the scan)"),
    eval_every: Optional[int] = typer.Option(None, help="windows between test evaluations (default 20; 0: only at the end)"),
    checkpoint_every: Optional[int] = typer.Option(None, help="windows between checkpoints (default 20; 0: never)"),
    conv_impl: Optional[str] = typer.Option(None, help="auto (default) | patches (fast on CPU) | lax (XLA convolutions, fast on GPU)"),
    data_dir: Optional[str] = typer.Option(None, help="prepared datasets or a folder of original files (default data/raw)"),
    out: Optional[str] = typer.Option(None, help="run directory (default data/runs/<dataset>-<task>-<method>-lr<lr0>-seed<seed>, where `glocal report` looks)"),
    params: Optional[Path] = typer.Option(None, help="read defaults from this params.yaml (train, hpo and the profile); without --params no params file is read"),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="when the dataset was not downloaded ('not run'), record 'not run' outputs and exit 0 (dvc.yaml uses this)"),
    profile: Optional[str] = typer.Option(None, "--profile", "-P", help="profile of params.yaml: quick | paper"),
):
    """Train a model with hyperparameters optimized by none / local / glocal / global / sgld hypergradients.

    Settings: the paper's defaults, then params.yaml only when --params is given
    (its train and hpo sections and the profile), then the flags.
    """
    from glocal_cli.config import from_mapping
    from glocal_cli.params import load_params, train_config
    from stages import train as stage

    overrides = {k: v for k, v in locals().items() if k not in ("params", "profile", "from_mapping", "stage", "missing_ok")}
    overrides = {k: v for k, v in overrides.items() if k in _TRAIN_FIELDS}
    if params is not None:
        cfg = train_config(load_params(params), profile, overrides)
    else:
        if profile is not None:
            raise UserError("--profile needs --params params.yaml")
        cfg = from_mapping(overrides)
    cfg.validate()
    stage.run(cfg, missing_ok=missing_ok)


@app.command()
def report(
    runs: Path = typer.Option(Path("data/runs"), help="folder of run directories (searched recursively for metrics.json)"),
    out: Path = typer.Option(Path("results"), help="output folder: figures/, tables/, summary.json, README.md"),
):
    """Figures (trajectories, DMD eigenvalues, ablation, divergence) and Markdown tables from the runs."""
    from stages import report as stage

    stage.run(runs=runs, out=out)



@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="reduced settings, under two minutes on a 2-core CPU"),
    out: Optional[Path] = typer.Option(None, help="write the results as JSON here"),
    data_dir: Path = typer.Option(Path("data/raw"), help="prepared datasets or a folder of original files (default data/raw)"),
    steps: Optional[int] = typer.Option(None, help="inner steps timed per method (whole windows)"),
):
    """Runtime table (paper Table 4): none / local / glocal / global on LeNet + Fashion-MNIST."""
    from stages import bench as stage

    stage.run(quick=quick, out=out, data_dir=data_dir, steps=steps)


@app.command()
def verify(
    profile: str = typer.Option("cpu", "--profile", "-P", help="cpu (MLP, T = 1500, minutes on 2 cores) | paper (LeNet, T = 20 000, a GPU job) | quick (seconds)"),
    data_dir: Path = typer.Option(Path("data/raw"), help="prepared datasets or a folder of original files (default data/raw)"),
    out: Path = typer.Option(Path("results/verify"), help="output folder (verify.md, verify.json, verify.png)"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1 (default: the profile's)"),
    windows: Optional[str] = typer.Option(None, help="comma-separated 1-based windows checked (default: spread evenly)"),
    windows_per_seed: Optional[int] = typer.Option(None, help="windows checked per seed when --windows is not given"),
    steps: Optional[int] = typer.Option(None, help="horizon T (inner steps) of the classifier runs"),
    lr0s: Optional[str] = typer.Option(None, help="comma-separated initial learning rates (default 0.001,0.1)"),
    model: Optional[str] = typer.Option(None, help="mlp | lenet (default: the profile's)"),
):
    """Every estimator and the truncated 2τ/4τ look-aheads vs the true global hypergradient, and h_t's noise vs batch size."""
    from stages import verify as stage

    stage.run(profile=profile, data_dir=data_dir, out=out, seeds=seeds, windows=windows, steps=steps, lr0s=lr0s,
              model=model, windows_per_seed=windows_per_seed)


_TRAIN_FIELDS = (
    "dataset method model task steps tau sigma m seed lr0 momentum0 weight_decay0 learn outer_lr batch_size "
    "estimator dmd_tol dmd_rank_rtol grad_mode global_outer_steps imbalance_factor val_fraction val_batch eval_every checkpoint_every conv_impl data_dir out "
    "imbalance_exponent reweight_loss sgld_temperature sgld_step_size sgld_burn_in sgld_thin sgld_damping sgld_persist_z sgld_val_batch"
).split()


def main(argv=None) -> None:
    """Entry point: run the app with honest exit codes.

    Bad input: one line ``error: ...`` and exit 2. Ctrl-C: one line and exit 130
    (a training run keeps its checkpoint). Only typer's public API is used.
    """
    try:
        rv = app(args=argv, standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(str(e), file=sys.stderr)  # "interrupted at window k; checkpoint kept in ..."
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as e:  # typer's usage errors (bad option, missing argument, no arguments)
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.format_message())
            return
        ctx = getattr(e, "ctx", None)
        name = getattr(getattr(ctx, "command", None), "name", None)
        hint = f" (see `glocal {name} --help`)" if name and name != "glocal" else " (see `glocal --help`)"
        message = " ".join(e.format_message().split())
        print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    if isinstance(rv, int) and rv != 0:  # typer returns 130 for Ctrl-C outside a training loop
        if rv == 130:
            print("interrupted", file=sys.stderr)
        sys.exit(rv)


if __name__ == "__main__":
    main()
