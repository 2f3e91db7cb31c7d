"""The ``glocal`` command line: one command per pipeline stage.

Bad input (unknown names, missing files, bad values) ends with a one-line
``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import List, Literal, Optional

import typer
from glocal_cli.errors import Interrupted, UserError

app = typer.Typer(
    name="glocal",
    help="Gradient-based HPO with glocal hypergradients (Hankel DMD), local and global baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from glocal_cli.provenance import version_text

        print(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version, its dependencies' versions, the device and the git commit"),
):
    """Gradient-based HPO with glocal hypergradients (Hankel DMD), local and global baselines."""


@app.command()
def download(
    name: str = typer.Argument(..., help="mnist, fashion_mnist (fmnist), kmnist, svhn, cifar10, cifar100"),
    source: str = typer.Option("tfds", help="'tfds' (needs a network) or a folder of the original files"),
    out: Path = typer.Option(Path("data/raw"), help="output folder for <name>.npz and <name>.json"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check the official checksums"),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="when the source lacks the files, record 'not run' outputs and exit 0 (dvc.yaml uses this)"),
):
    """Prepare a dataset as one compact array file (from tensorflow-datasets or the original files)."""
    from glocal_cli.commands import download as stage

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
    from glocal_cli.commands import imbalance as stage

    stage.run(dataset=dataset, factor=factor, seed=seed, data_dir=data_dir, out=out, missing_ok=missing_ok)


#: ``glocal train`` options that are not settings of TrainConfig / HPOConfig.
TRAIN_COMMAND_ONLY = {
    "params": (Optional[Path], typer.Option(None, help="read defaults from this params.yaml (train, hpo and the profile); without --params no params file is read", rich_help_panel="Run")),
    "profile": (Optional[str], typer.Option(None, "--profile", "-P", help="profile of params.yaml (its `profiles` section: quick, paper, ...)", rich_help_panel="Run")),
    "seeds": (Optional[str], typer.Option(None, "--seeds", help="train these seeds of the setting in one program, e.g. 0,1,2,3,4 (one run folder each; --out may contain {seed}, else <out>/seed<k>)", rich_help_panel="Run")),
    "seeds_summary": (Optional[Path], typer.Option(None, "--seeds-summary", help="when all seeds are done, write this JSON file: each seed's run folder, status and test accuracy (the output dvc.yaml declares for a setting)", rich_help_panel="Output")),
    "missing_ok": (bool, typer.Option(False, "--missing-ok", help="when the dataset was not downloaded ('not run'), record 'not run' outputs and exit 0 (dvc.yaml uses this)", rich_help_panel="Output")),
}

#: The order of ``glocal train --help``'s panels (settings declare theirs: ``settings.setting(panel=...)``).
PANELS = ("Run", "Data", "Hyperparameters", "Outer loop", "Glocal / DMD", "SGLD", "Inner optimizer", "Performance",
          "Output")


def _option_type(annotation: str) -> type:
    """The command-line type of a field annotated ``annotation`` (``Optional[float]`` -> float;
    tuples and optax objects are given as text)."""
    found = re.search(r"\b(bool|int|float)\b", str(annotation))
    return {"bool": bool, "int": int, "float": float}[found.group(1)] if found else str


def _setting_options() -> list:
    """One ``--name`` option per leaf setting of TrainConfig (``hpo`` included), help and default from the field."""
    from glocal_cli import settings
    from glocal_cli.config import LEAVES

    params = []
    for name, (_, f) in LEAVES.items():
        default = f.default
        kind = _option_type(f.type)
        shown = ",".join(default) if isinstance(default, tuple) else ("unset" if default in (None, "") else default)
        choices = f.metadata.get(settings.CHOICES)
        if choices:  # a real choice: typo -> one line listing the allowed values; shell completion offers them
            kind = Literal[choices]
        panel = f.metadata.get(settings.PANEL) or "Run"
        if panel not in PANELS:
            raise TypeError(f"setting {name!r}: panel {panel!r} is not one of {PANELS}")
        help_text = f"{f.metadata['help']} (default {shown})".replace("[", r"\[")
        opt = typer.Option(None, settings.flag(name), help=help_text, rich_help_panel=panel,
                           case_sensitive=name != "dataset")
        # a choice stays a bare Literal: Optional[...] is cached by typing with Literal's order-blind equality, so
        # two settings with the same values in another order (--mode, --val-grad) would list one order for both
        annotation = kind if choices else Optional[kind]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation))
    for name, (kind, opt) in TRAIN_COMMAND_ONLY.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind))
    order = {p: i for i, p in enumerate(PANELS)}
    return sorted(params, key=lambda p: order[p.default.rich_help_panel])  # stable: panels in PANELS order


def train_settings(options: dict):
    """``glocal train``'s parsed options -> ``(TrainConfig, command-only options, ignored-setting warnings)``.

    The config is built and validated once: defaults, then params.yaml when
    ``--params`` is given (its train and hpo sections and the profile), then the flags.
    """
    from glocal_cli.config import from_mapping, ignored_settings
    from glocal_cli.params import given_in_file, load_params, train_config
    from glocal_cli.settings import flag

    options = dict(options)
    extra = {k: options.pop(k) for k in TRAIN_COMMAND_ONLY}
    given = {}
    if extra["params"] is not None:
        values = load_params(extra["params"])
        cfg = train_config(values, extra["profile"], options)
        given.update(given_in_file(values))
    else:
        if extra["profile"] is not None:
            raise UserError("--profile needs --params params.yaml")
        cfg = from_mapping(options)
    given.update({name: flag(name) for name, value in options.items() if value is not None})
    return cfg, extra, ignored_settings(cfg, given)


def train(**options):
    """Train a model with hyperparameters optimized by none / local / glocal / global hypergradients.

    Settings: the paper's defaults, then params.yaml only when --params is given
    (its train and hpo sections and the profile), then the flags.
    """
    from glocal_cli.commands import train as stage

    cfg, extra, warnings = train_settings(options)
    for line in warnings:
        print(line, file=sys.stderr)
    stage.run(cfg, missing_ok=extra["missing_ok"], seeds=extra["seeds"], seeds_summary=extra["seeds_summary"])


def check_command(argv: List[str]) -> List[str]:
    """Parse ``glocal ARGV`` as the command line would, without running it; return its warnings.

    Bad options or values raise as they would on the command line; for ``train`` the
    config is built (params file, profile and flags), so a job prepared for later
    (``scripts/gpu/paper.py --check``) is known to start.
    """
    if argv[0] == "train":
        return parse_train(argv[1:])[2]
    _context(argv)
    return []


def parse_train(argv: List[str]):
    """``glocal train ARGV`` parsed as the command line would, not run: ``train_settings``' triple.

    A job that trains outside the command (``scripts/baselines_cost.py``) builds the
    config of a dvc.yaml stage line through this, params file and profile included.
    """
    return train_settings(_context(["train", *argv]).params)


def _context(argv: List[str]):
    """The click context of ``glocal ARGV`` (options parsed and validated)."""
    from typer.main import get_command

    return get_command(app).commands[argv[0]].make_context(argv[0], list(argv[1:]))


train.__signature__ = inspect.Signature(_setting_options())
app.command()(train)


@app.command()
def report(
    runs: Path = typer.Option(Path("data/runs"), help="folder of run directories (searched recursively for metrics.json)"),
    out: Path = typer.Option(Path("results"), help="output folder: figures/, tables/, summary.json, README.md"),
):
    """Figures (trajectories, DMD eigenvalues, ablation, divergence) and Markdown tables from the runs."""
    from glocal_cli.commands import report as stage

    stage.run(runs=runs, out=out)



@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="reduced settings, under two minutes on a 2-core CPU"),
    out: Optional[Path] = typer.Option(None, help="write the results as JSON here"),
    data_dir: Path = typer.Option(Path("data/raw"), help="prepared datasets or a folder of original files (default data/raw)"),
    steps: Optional[int] = typer.Option(None, help="inner steps timed per method (whole windows)"),
    seed_counts: Optional[str] = typer.Option(None, help="numbers of seeds timed as one program, e.g. 1,5 (default 1,5; 0 skips)"),
    train_windows: Optional[int] = typer.Option(None, help="windows of the glocal train run timed against the bench, per method (default 5; 0 skips)"),
    variant: Optional[List[str]] = typer.Option(None, help="setting overrides timed for local / glocal windows, e.g. 'val_chunk=1000;val_batch=5' (repeatable)"),
):
    """Runtime table (paper Table 4): none / local / glocal / global on LeNet + Fashion-MNIST, seeds in one program, train overhead."""
    from glocal_cli.commands import bench as stage

    stage.run(quick=quick, out=out, data_dir=data_dir, steps=steps, seed_counts=seed_counts,
              train_windows=train_windows, variants=variant)


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
    expected_orders: Optional[int] = typer.Option(None, help="minibatch orders K (>= 4) averaged into the expected-global reference (default 4)"),
    problems: Optional[str] = typer.Option(None, help="comma-separated studies: quadratic,classifier,noise (default: all)"),
):
    """Every estimator and the truncated 2τ/4τ look-aheads vs the true global hypergradient and its mean over K minibatch orders, and h_t's noise vs batch size."""
    from glocal_cli.commands import verify as stage

    stage.run(profile=profile, data_dir=data_dir, out=out, seeds=seeds, windows=windows, steps=steps, lr0s=lr0s,
              model=model, windows_per_seed=windows_per_seed, expected_orders=expected_orders, problems=problems)


def main(argv=None, prog_name=None) -> None:
    """Entry point: run the app with honest exit codes.

    Bad input: one line ``error: ...`` and exit 2. Ctrl-C: one line and exit 130
    (a training run keeps its checkpoint). Only typer's public API is used.
    """
    try:
        rv = app(args=argv, prog_name=prog_name, standalone_mode=False)
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
        message = " ".join(e.format_message().replace("Value error, ", "").split())
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


def run_stage(path: str) -> None:
    """Entry point of ``stages/<command>.py``: ``python stages/<command>.py ARGS`` runs ``glocal <command> ARGS``."""
    main([Path(path).stem, *sys.argv[1:]], prog_name="glocal")


if __name__ == "__main__":
    main()
