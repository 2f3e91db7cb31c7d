"""Command ``glocal verify``: every estimator and the truncated look-aheads against the true global hypergradient.

Computes with :func:`glocal_cli.verify.run_verify` and writes (atomically)
``verify.json``, ``verify.md`` and ``verify.png`` under ``out``; ``verify.json``
and ``verify.md`` are also written after every classifier window (``"complete":
false``), so a run cut short (a time-limited GPU job) keeps what it finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from glocal_cli import atomic, provenance, verify
from glocal_cli.errors import UserError
from glocal_cli.settings import parse_list


def _list(text: Optional[str], name: str, cast):
    return None if text is None else parse_list(text, name, cast)


def settings(profile: str = "cpu", data_dir: Path = Path("data/raw"), seeds: Optional[str] = None,
             windows: Optional[str] = None, steps: Optional[int] = None, lr0s: Optional[str] = None,
             model: Optional[str] = None, windows_per_seed: Optional[int] = None,
             expected_orders: Optional[int] = None, problems: Optional[str] = None) -> verify.VerifySettings:
    """The validated settings from command-line values (bad input is a one-line :class:`UserError`)."""
    return verify.profile_settings(
        profile, data_dir=str(data_dir), seeds=_list(seeds, "seeds", int), windows=_list(windows, "windows", int),
        steps=steps, lr0s=_list(lr0s, "lr0s", float), model=model, windows_per_seed=windows_per_seed,
        expected_orders=expected_orders, problems=_list(problems, "problems", str))


def write(res: verify.VerifyResult, out: Path, figure: bool = True) -> None:
    """``verify.json``, ``verify.md`` and (``figure``) ``verify.png`` under ``out`` (atomic writes)."""
    import matplotlib.pyplot as plt

    out = Path(out)
    atomic.write_json(out / "verify.json", {**res.to_json(), "provenance": provenance.collect()})
    atomic.write_text(out / "verify.md", verify.markdown(res))
    if not figure:
        return
    fig = verify.figure(res)
    with atomic.atomic_path(out / "verify.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(profile: str = "cpu", data_dir: Path = Path("data/raw"), out: Path = Path("results/verify"),
        seeds: Optional[str] = None, windows: Optional[str] = None, steps: Optional[int] = None,
        lr0s: Optional[str] = None, model: Optional[str] = None, windows_per_seed: Optional[int] = None,
        expected_orders: Optional[int] = None, problems: Optional[str] = None,
        console: Optional[Console] = None) -> verify.VerifyResult:
    console = console or Console()
    s = settings(profile, data_dir, seeds, windows, steps, lr0s, model, windows_per_seed, expected_orders, problems)
    if not Path(data_dir).exists():
        raise UserError(f"--data-dir {data_dir} does not exist: run `glocal download fashion_mnist` "
                        "or point --data-dir at a folder of the original files")
    with console.status("verify") as status:
        def say(msg: str) -> None:
            status.update(msg)
            if not console.is_terminal:  # a log file: one line per step
                console.log(msg)

        res = verify.run_verify(s, say=say, on_partial=lambda partial: write(partial, out, figure=False))
    for problem, sm in res.summary.items():
        k = sm["expected_global"]["orders"]
        t = Table(title=f"{problem}: estimate vs the true global hypergradient (truth) and its mean over {k} "
                        f"minibatch orders (expected) ({sm['windows']} windows)")
        for col in ("estimator", "truth: cosine", "truth: median rel. err", "truth: signs", "expected: cosine",
                    "expected: median rel. err", "expected: signs", "fallbacks", "tangent steps"):
            t.add_column(col)
        for e, v in sm["estimators"].items():
            x = sm["estimators_vs_expected_global"].get(e)
            ex = [f"{x['cosine_mean']:.3f}", f"{x['rel_err_median']:.3g}", f"{x['sign_agreement']:.2f}"] if x else ["-"] * 3
            t.add_row(e, f"{v['cosine_mean']:.3f}", f"{v['rel_err_median']:.3g}", f"{v['sign_agreement']:.2f}",
                      *ex, str(v["fallbacks"]), str(v["cost_tangent_steps"]))
        console.print(t)
    for line in res.conclusions():
        console.print(line)
    write(res, out)
    console.print(f"wrote {out}/verify.md, verify.json, verify.png ({res.seconds['total']:.0f} s)")
    return res
