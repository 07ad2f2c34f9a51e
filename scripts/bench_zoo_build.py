"""Zoo-build throughput end to end: `build_zoo` as `mole zoo build` runs it, snapshot evaluation, every
variant and shard writing included, as members x training steps per second, with its peak memory.

Each (spec, processes) build runs in a fresh spawned process into a fresh folder, so its peak resident
memory (resource.getrusage) is its own; "worker_peak_mb" is the largest of its training workers.
Members x steps counts the dense run (K x steps per group) and, separately, every variant's extra
training too (IMP rounds, supermasks), as the progress bar does.

    .venv/bin/python scripts/bench_zoo_build.py --out runs/bench/zoo_build.json \
        [--spec configs/quickstart/zoo.yaml configs/zoo/digits_cnn.yaml --processes 1 2 --threads 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.io import write_json  # atomic: a temporary name, then rename
from mole.zoo.build import build_zoo, default_processes, prepare
from mole.zoo.spec import ZooSpec, plan_groups
from mole.zoo.variants import GroupContext

REPO = Path(__file__).resolve().parents[1]
SPECS = [REPO / "configs/quickstart/zoo.yaml", REPO / "configs/zoo/digits_cnn.yaml"]


def member_steps(spec: ZooSpec) -> tuple[int, int]:
    """(dense member-steps, member-steps of all training incl. the variants') of the whole sweep."""
    data, arch, variants = prepare(spec)
    dense = total = 0
    for group in plan_groups(spec):
        ctx = GroupContext(spec, spec.spec_hash(), arch, data, group)
        extra = sum(v.extra_steps(ctx, c) for v in variants for c in v.configs())
        dense += ctx.k * ctx.total_steps
        total += ctx.k * (ctx.total_steps + extra)
    return dense, total


def _build(spec: ZooSpec, out: Path, processes: int, threads: int | None, queue) -> None:
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    build_zoo(spec, out, progress=False, processes=processes)
    seconds = time.perf_counter() - t0
    kb = 1024  # ru_maxrss is in KiB on Linux
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    queue.put({"seconds": seconds, "peak_mb": me.ru_maxrss / kb, "worker_peak_mb": children.ru_maxrss / kb})


def measure(spec: ZooSpec, processes: int, threads: int | None = None) -> dict:
    mp = torch.multiprocessing.get_context(
        "spawn"
    )  # a fork would inherit this process's OpenMP pool and hang
    queue = mp.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="bench_zoo_build_") as tmp:
        p = mp.Process(target=_build, args=(spec, Path(tmp) / "zoo", processes, threads, queue))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"build of {spec.name} with {processes} processes failed (exit {p.exitcode})")
        return queue.get()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument(
        "--spec", type=Path, nargs="+", default=SPECS, help="zoo specs (default: quickstart, digits_cnn)"
    )
    p.add_argument(
        "--processes", type=int, nargs="+", default=None, help="process counts (default: 1 and cores)"
    )
    p.add_argument("--repeats", type=int, default=1, help="builds per setting (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the building process (workers use 1; default: torch's)",
    )
    args = p.parse_args(argv)
    counts = args.processes or sorted({1, default_processes()})
    threads = args.threads or torch.get_num_threads()
    res = {"config": {"processes": counts, "repeats": args.repeats, "threads": threads,
                      "cores": os.cpu_count(), "torch": torch.__version__},
           "load_average_before": os.getloadavg(), "builds": []}  # fmt: skip
    for path in args.spec:
        spec = ZooSpec.from_yaml(path)
        dense, total = member_steps(spec)
        for processes in counts:
            for r in range(args.repeats):
                m = measure(spec, processes, args.threads)
                row = {
                    "spec": str(path),
                    "processes": processes,
                    "repeat": r + 1,
                    **m,
                    "dense_member_steps": dense,
                    "member_steps": total,
                    "dense_member_steps_per_s": dense / m["seconds"],
                    "member_steps_per_s": total / m["seconds"],
                }
                res["builds"].append(row)
                print(
                    f"{spec.name:<12} {processes} proc  {m['seconds']:7.2f} s  "
                    f"{row['member_steps_per_s']:9.0f} member-steps/s ({row['dense_member_steps_per_s']:.0f} dense)  "
                    f"peak {m['peak_mb']:.0f} MB, workers {m['worker_peak_mb']:.0f} MB"
                )
    res["load_average_after"] = os.getloadavg()
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
