"""`mole baselines run | subset-sum`: prune a zoo's members with the baselines, or run the subset-sum construction.

Typed stage functions: mole/cli.py turns each signature and docstring into its subcommand's flags.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from mole.baselines import BASELINES, GROUP_SIZE, run_baselines
from mole.baselines.subset_sum import check_n, check_range, plot_subset_sum, subset_sum_experiment
from mole.data import load_task
from mole.errors import ConfigError
from mole.progress import StageProgress, on_terminal
from mole.theory.io import write_csv
from mole.zoo import store
from mole.zoo.build import build_zoo, resolve_device
from mole.zoo.spec import ZooSpec

DEFAULT_BASELINES = ("magnitude", "random", "imp", "edge_popup")
SPARSITY_BASELINES = ("magnitude", "random", "edge_popup", "lsq_supermask")  # the ones `--sparsity` sets
DEFAULT_N = (4, 8, 12, 16, 20, 24)
# The tiny target trained when no --zoo is given: 64-16-16-10 on digits, ~2 s, test accuracy ~0.97.
TARGET_HPARAMS = {"lr": 0.05, "momentum": 0.9, "batch_size": [32], "optimizer": ["sgd"]}


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 120)


# ---------------------------------------------------------------------------- run
def run_command(
    zoo: str,
    *,
    out: str,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    options: dict[str, dict[str, Any]] | None = None,
    sparsity: Sequence[float] | None = None,
    variant: str = "dense",
    group_size: int | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "cpu",
    progress: bool = True,
) -> int:
    """Prune a zoo's members with the baselines.

    Apply baselines to a zoo's final members (one row per member and level) and write the rows as a
    zoo folder that `mole eval` reads like any other. Rerunning the same command reuses it.

    Args:
        zoo: zoo folder
        out: folder for the baseline rows (a zoo)
        baselines: which to run, of magnitude, random, imp, edge_popup, lsq_supermask, subset_sum; e.g.
            [magnitude,imp]
        options: options per baseline, e.g. '{"imp": {"rounds": 3}, "edge_popup": {"epochs": 20}}' or
            --options.imp '{"rounds": 3}'
        sparsity: levels for magnitude, random, edge_popup and lsq_supermask (unless their options set one), e.g.
            [0.5,0.8,0.9]
        variant: which of the zoo's members to start from (the last snapshot of each is the member)
        group_size: members stacked per run (default: the zoo's)
        accelerator: where to compute
        progress: show a progress bar
    """
    names = list(baselines)
    if not names:
        raise ConfigError("baselines", "an empty list")
    for name in names:
        BASELINES.get(name, field="baselines")
    opts = dict(options or {})
    for name in opts:
        if name not in names:
            raise ConfigError(f"options.{name}", f"not among --baselines ({', '.join(names)})")
    chosen = {name: dict(opts.get(name, {})) for name in names}
    if sparsity is not None:
        if not sparsity:
            raise ConfigError("sparsity", "an empty list")
        for name in SPARSITY_BASELINES:
            if name in chosen:
                chosen[name].setdefault("sparsity", list(sparsity))

    folder = Path(zoo)
    rows = [r for r in store.read_zoo(folder).to_pylist() if r["variant"] == variant]
    if not rows:
        found = sorted(set(store.read_zoo(folder, columns=["variant"]).column("variant").to_pylist()))
        raise ConfigError(
            "variant", f"no {variant!r} rows in {folder}; it holds: {', '.join(found) or 'nothing'}"
        )
    tasks = {(r["task"], r["task_options"] or "{}") for r in rows}
    if len(tasks) != 1:
        raise ConfigError("zoo", f"{folder} mixes tasks {sorted(tasks)}")
    task, task_options = tasks.pop()
    if group_size is None:
        spec = (
            store.read_json(folder / store.SPEC, "spec").get("spec", {})
            if (folder / store.SPEC).exists()
            else {}
        )
        group_size = int(spec.get("group_size") or GROUP_SIZE)
    data = load_task(task, **json.loads(task_options)).to(resolve_device(accelerator))

    start = time.perf_counter()
    bars = progress and on_terminal()  # off a terminal the summary line below says it
    result = run_baselines(rows, data, chosen, out=Path(out), group_size=group_size, progress=bars)
    seconds = time.perf_counter() - start
    console = _console()
    console.print(summary_table(result))
    console.print(f"{len(result)} rows in {seconds:.1f} s -> {out}")
    return 0


def summary_table(rows: list[dict]):
    """A rich table: one line per baseline level, with members, achieved sparsity and test accuracy."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["variant_config"]), []).append(r)
    table = Table(title="baselines (test accuracy on the task's test split)")
    for col in ("baseline", "level", "members", "sparsity", "test_acc mean", "min", "max"):
        table.add_column(col, justify="left" if col in ("baseline", "level") else "right")
    for (name, config), rs in groups.items():
        cfg = json.loads(config)
        level = ", ".join(
            f"{k}={v}" for k, v in cfg.items() if k in ("sparsity", "round", "n", "scope", "init")
        )
        accs = [r["test_acc"] for r in rs]
        table.add_row(
            name,
            level,
            str(len(rs)),
            f"{sum(r['sparsity'] for r in rs) / len(rs):.3f}",
            f"{sum(accs) / len(accs):.3f}",
            f"{min(accs):.3f}",
            f"{max(accs):.3f}",
        )
    return table


# ---------------------------------------------------------------------------- subset-sum
def train_target(out: str | Path, hidden: list[int], epochs: int = 30, seed: int = 0) -> dict:
    """Train one small digits MLP as a zoo in `out` (resumed if already there); return its final row."""
    spec = ZooSpec.from_dict(
        {
            "name": "subset_sum_target",
            "task": "digits",
            "architecture": "mlp",
            "arch_options": {"hidden": list(hidden)},
            "members": 1,
            "group_size": 1,
            "seed": seed,
            "hparams": {**TARGET_HPARAMS, "epochs": [epochs]},
            "variants": ["dense"],
        }
    )
    build_zoo(spec, Path(out), progress=False)
    return next(r for r in store.read_zoo(Path(out)).to_pylist() if r["final"])


def pick_target(zoo: str | Path, member: str | None) -> dict:
    """The target row: `member`'s final row, else the smallest final dense mlp (best test accuracy among ties)."""
    rows = [r for r in store.read_zoo(Path(zoo)).to_pylist() if r["final"]]
    if member is not None:
        found = [r for r in rows if r["member_id"] == member]
        if not found:
            raise ConfigError("member", f"no final row of {member!r} in {zoo}")
        return found[-1]
    mlps = [r for r in rows if r["architecture"] == "mlp" and r["variant"] == "dense"]
    if not mlps:
        raise ConfigError("zoo", f"{zoo} holds no final dense mlp member (the construction needs an MLP)")
    return min(mlps, key=lambda r: (r["num_params"], -r["test_acc"]))


def subset_sum_command(
    *,
    out: str,
    zoo: str | None = None,
    member: str | None = None,
    n: Sequence[int] = DEFAULT_N,
    seed: int = 0,
    target_range: float = 0.5,
    hidden: Sequence[int] = (16, 16),
    epochs: int = 30,
    progress: bool = True,
) -> int:
    """Subset-sum lottery tickets: error against n.

    Approximate a trained MLP by pruning a random network twice as deep: each weight is an exact subset
    sum of n random products (meet in the middle, n <= 40). Reports weight and output error and test
    accuracy against n; writes OUT/subset_sum.csv and OUT/subset_sum.png.

    Args:
        out: output folder
        zoo: take the target from this zoo (default: train a tiny digits MLP into OUT/target)
        member: target member id in --zoo (default: its smallest final dense mlp)
        n: products per subset sum (each <= 40), e.g. [4,8,12,16,20]
        seed: seed of the random networks and the trained target
        target_range: targets are scaled into [-r, r], r in (0, 1]
        hidden: hidden widths of the trained target
        epochs: epochs of the trained target
        progress: a progress bar on a terminal, else one line when done
    """
    if not n:
        raise ConfigError("n", "an empty list")
    ns = [check_n(v, "n") for v in n]
    check_range(target_range)
    folder = Path(out)
    if zoo is not None:
        target = pick_target(zoo, member)
    else:
        target = train_target(folder / "target", list(hidden), epochs, seed)
    data = load_task(target["task"], **json.loads(target["task_options"] or "{}"))
    start = time.perf_counter()
    with StageProgress("subset-sum tickets", unit="n", enabled=progress) as on_n:
        rows = subset_sum_experiment(target, data, ns, seed, target_range, on_n)
    seconds = time.perf_counter() - start
    widths = json.loads(target["arch_options"])["hidden"]
    title = (
        f"subset-sum tickets for {target['member_id']} (mlp {'-'.join(map(str, widths))}, {target['task']})"
    )
    paths = [
        write_csv(rows, folder / "subset_sum.csv"),
        plot_subset_sum(rows, folder / "subset_sum.png", title),
    ]

    table = Table(title=f"{title}: test accuracy {rows[0]['target_test_acc']:.4f}")
    cols = ("n", "params", "kept", "w err max", "w err mean", "active max", "out err max", "out err mean",
            "acc", "agree", "s")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["n"]), str(r["num_params"]), str(r["kept_weights"]),
            *(f"{r[k]:.1e}" for k in ("weight_err_max", "weight_err_mean", "active_err_max",
                                      "output_err_max", "output_err_mean")),
            f"{r['pruned_test_acc']:.4f}", f"{r['agreement']:.4f}", f"{r['seconds']:.2f}",
        )  # fmt: skip
    console = _console()
    console.print(table)
    console.print(f"seed {seed}, targets scaled into [-{target_range}, {target_range}]: {seconds:.1f} s")
    for p in paths:
        console.print(f"wrote {p}")
    return 0
