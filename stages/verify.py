"""Stage ``verify``: glocal and local hypergradients against the true global one (LeNet/FMNIST, quadratic)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from glocal_cli import verify
from glocal_cli.errors import UserError


def _ints(text: Optional[str], name: str):
    if text is None:
        return None
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--{name} must be comma-separated integers, got {text!r}") from None


def run(quick: bool = False, data_dir: Path = Path("data/raw"), out: Path = Path("results/verify"),
        seeds: Optional[str] = None, windows: Optional[str] = None, steps: Optional[int] = None,
        console: Optional[Console] = None, **kw) -> dict:
    console = console or Console()
    if not Path(data_dir).exists():
        raise UserError(f"--data-dir {data_dir} does not exist: run `glocal download fashion_mnist` "
                        "or point --data-dir at a folder of the original files")
    try:
        s = verify.verify_settings(quick=quick, data_dir=str(data_dir), seeds=_ints(seeds, "seeds"),
                                   windows=_ints(windows, "windows"), steps=steps, **kw)
    except ValueError as e:
        raise UserError(str(e)) from None
    with console.status("verify") as status:
        res = verify.run_verify(s, Path(out), say=lambda msg: status.update(msg))
    for problem, sm in res["summary"].items():
        t = Table(title=f"{problem}: estimate vs true global hypergradient")
        for col in ("estimator", "mean cosine", "median rel. err", "sign agreement", "fallbacks"):
            t.add_column(col)
        for e, v in sm["estimators"].items():
            t.add_row(e, f"{v['cosine_mean']:.3f}", f"{v['rel_err_median']:.3g}", f"{v['sign_frac_mean']:.2f}",
                      f"{v['fallbacks']} {' '.join(v['reasons'])}")
        console.print(t)
        for e, closer in sm["glocal_closer_than_local"].items():
            console.print(f"{problem}: {e} is {'closer' if closer else '[bold red]NOT closer[/]'} to the true global "
                          "hypergradient than local")
    console.print(f"wrote {out}/verify.md, verify.json, verify.png")
    return res
