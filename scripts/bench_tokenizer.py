"""Benchmark: stream a >= 10k-checkpoint zoo through ZooDataModule's train DataLoader on CPU.

Builds (in a child process, so its training memory does not count) a dense MLP sweep with a snapshot
at every step -- by default 256 members x 49 snapshots = 12,544 checkpoints -- or takes `--zoo`.
Then converts it once to the `datasets` Arrow cache (ZooDataModule.prepare_data, in a child process
as Lightning would on one rank), opens it with ZooDataModule (fractions 1/0/0, so the train loader
covers every checkpoint), fits the tokenizer, iterates one full epoch and reports checkpoints/s, tokens/s, the time per stage
of one item (row read, MemberTensors, tokenize, normalise), and memory: peak RSS (ru_maxrss) before
and after the epoch, the resident anonymous (heap) and file-backed (memory-mapped Arrow) pages at the
end, beside the zoo's size on disk and its Arrow cache. Bounded memory means the heap does not grow
with the zoo; mapped pages are the page cache and are dropped under pressure.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_tokenizer.py --out /tmp/bench_tok.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
import torch  # noqa: E402

from mole.diffusion.datamodule import ZooDataModule  # noqa: E402
from mole.tokenizer import MemberTensors  # noqa: E402


def zoo_spec(members: int, epochs: int, hidden: int) -> dict:
    return {
        "name": "bench-tokenizer",
        "task": "digits",
        "architecture": "mlp",
        "arch_options": {"hidden": [hidden]},
        "variants": ["dense"],
        "members": members,
        "group_size": 128,
        "seed": 0,
        "hparams": {"lr": {"low": 0.02, "high": 0.2, "log": True}, "batch_size": [64], "epochs": [epochs]},
        "snapshots": {"every": 1},
    }


def _build(spec: dict, out: str) -> None:
    from mole.zoo.build import build_zoo
    from mole.zoo.spec import ZooSpec

    build_zoo(ZooSpec.from_dict(spec), out, progress=False)


def _prepare(zoo: str, cache_dir: str, queue) -> None:
    """Child process: the one-time Parquet -> Arrow conversion; reports its own peak RSS."""
    t0 = time.perf_counter()
    ZooDataModule(zoo, cache_dir=cache_dir).prepare_data()
    queue.put((time.perf_counter() - t0, peak_rss_mb()))


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_split_mb() -> dict:
    """Resident anonymous / file-backed memory now (Linux /proc; empty elsewhere)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    vals = {
        ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in lines if ln.startswith(("RssAnon", "RssFile"))
    }
    return {"rss_anon_mb": vals.get("RssAnon"), "rss_file_mb": vals.get("RssFile")}


def stage_times(ds, n: int) -> dict:
    """Mean microseconds per item of each stage over the first n items."""
    tok, acc = ds.tokenizer, {"read_row": 0.0, "from_row": 0.0, "tokenize": 0.0, "normalize": 0.0}
    n = min(n, len(ds))
    for i in range(n):
        t0 = time.perf_counter()
        row = ds.row(ds.rows[i])
        t1 = time.perf_counter()
        member = MemberTensors.from_row(row)
        t2 = time.perf_counter()
        tokens, layout = tok.tokenize(member)
        t3 = time.perf_counter()
        tok.normalize(tokens, layout)
        t4 = time.perf_counter()
        for k, dt in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            acc[k] += dt
    return {f"{k}_us": round(v / max(n, 1) * 1e6, 1) for k, v in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    ap.add_argument("--zoo", help="an existing zoo folder (default: build one in a temporary folder)")
    ap.add_argument("--members", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, help="16 steps each on digits; a snapshot per step")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--tokenizer", default="neuron")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench-tok-") as work:
        zoo = Path(args.zoo) if args.zoo else Path(work) / "zoo"
        build_s = None
        if not args.zoo:
            t0 = time.perf_counter()
            proc = mp.get_context("spawn").Process(
                target=_build, args=(zoo_spec(args.members, args.epochs, args.hidden), str(zoo))
            )
            proc.start()
            proc.join()
            if proc.exitcode:
                raise SystemExit(f"zoo build failed (exit code {proc.exitcode})")
            build_s = time.perf_counter() - t0
        cache_dir = str(Path(work) / "datasets-cache")
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_prepare, args=(str(zoo), cache_dir, queue))
        proc.start()
        prepare_s, prepare_rss = queue.get()
        proc.join()
        rss_start = peak_rss_mb()

        t0 = time.perf_counter()
        dm = ZooDataModule(
            str(zoo),
            tokenizer=args.tokenizer,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            fractions=(1.0, 0.0, 0.0),
            cache_dir=cache_dir,
        )
        dm.setup()
        setup_s = time.perf_counter() - t0
        rss_setup, split_setup = peak_rss_mb(), rss_split_mb()

        checkpoints = tokens = 0
        t0 = time.perf_counter()
        for batch in dm.train_dataloader():
            checkpoints += batch["tokens"].shape[0]
            tokens += int(batch["token_valid"].sum())
        epoch_s = time.perf_counter() - t0
        t, d = batch["tokens"].shape[1:]
        result = {
            "zoo": str(zoo) if args.zoo else "built (temporary)",
            "checkpoints": checkpoints,
            "tokenizer": args.tokenizer,
            "token_shape": [t, d],
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "torch_threads": torch.get_num_threads(),
            "build_s": None if build_s is None else round(build_s, 2),
            "prepare_s (one-time Parquet -> Arrow cache, child process)": round(prepare_s, 2),
            "prepare_peak_rss_mb": round(prepare_rss, 1),
            "setup_s (open + split + fit tokenizer)": round(setup_s, 2),
            "epoch_s": round(epoch_s, 2),
            "checkpoints_per_s": round(checkpoints / epoch_s, 1),
            "tokens_per_s": round(tokens / epoch_s, 1),
            "values_per_s": round(tokens * d / epoch_s, 1),
            **stage_times(dm.datasets["train"], 1000),
            "peak_rss_mb_before_setup": round(rss_start, 1),
            "peak_rss_mb_after_setup": round(rss_setup, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "children_peak_rss_mb (build, prepare, workers)": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
            **{f"{k}_after_setup": round(v, 1) for k, v in split_setup.items() if v is not None},
            **{f"{k}_after_epoch": round(v, 1) for k, v in rss_split_mb().items() if v is not None},
            "zoo_parquet_mb": round(folder_mb(zoo / "shards"), 1),
            "arrow_cache_mb": round(folder_mb(Path(work) / "datasets-cache"), 1),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
