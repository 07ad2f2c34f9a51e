"""Benchmark B1: stacked zoo training against the strongest ways of training the same members.

Trains K members of the MLP 64-32-32-10 and of the CNN (conv 8, conv 16, fc 32) on digits, each way
on the same work (same inits, same per-member data order, same SGD hyperparameters):

* stacked: `mole.zoo.train.train_stacked`, in one process at 1 and 2 threads, and split across one
  1-thread worker process per core (`processes=`);
* one by one at its best setting: one 1-thread process per core, the members split across them;
* one by one in one process, at 1 and 2 threads;
* the torch.func vmap ensemble: `stack_module_state` + `vmap(functional_call)`, one torch.optim.SGD
  over the stacked leaves (all members share lr and momentum here, so one optimizer is exact).

Reports seconds, GFLOP/s (analytic: forward 2*B*MACs per member and step, training 3x forward), the
fraction of the all-core float32 matmul peak measured in the same run (a 2048^3 sgemm), and each way's
mean test accuracy. For the MLP it also times the step's batched matmuls alone ("matmuls only"): the
peak fraction the stacked step could reach were everything else in it free. `--repeats` runs
everything again and reports each repeat; the summary takes the median. Writes JSON.

    .venv/bin/python scripts/bench_zoo.py --out b1.json [--arch mlp cnn --repeats 3 --members 128]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.data import load_task
from mole.io import write_json  # atomic: a temporary name, then rename
from mole.nets import build_architecture
from mole.zoo.build import default_processes
from mole.zoo.plan import MemberPlan
from mole.zoo.train import data_generators, evaluate_stacked, steps_per_epoch, train_stacked

ARCHS = {"mlp": {"hidden": [32, 32]}, "cnn": {"channels": [8, 16], "kernel_size": 3, "hidden": [32]}}
TARGETS = {  # issue 23: ratios of the best stacked setting's seconds to each baseline's best
    "mlp": {"vs_one_by_one": 10, "vs_vmap": 2, "peak_fraction": 0.5, "acc_within_points": 1},
    "cnn": {"vs_one_by_one": 5, "acc_within_points": 1},
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clone(params: dict) -> dict:
    return {k: v.detach().clone() for k, v in params.items()}


# ---------------------------------------------------------------------------- the ways
class OverBudget(Exception):
    """A way ran past --budget seconds. args: (seconds extrapolated from the part done, accuracies of
    the members finished, or None when no member finished)."""


class Clock:
    """Wall clock of one way; `check(done)` stops the way once it is past the budget."""

    def __init__(self, budget: float | None):
        self.budget, self.t0, self.done = budget, time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def check(self, done: float) -> None:
        """`done`: fraction of the way's work finished so far."""
        self.done = done
        if self.budget is not None and self.elapsed() > self.budget and 0 < done < 1:
            raise OverBudget(self.elapsed() / done, None)


def run_stacked(arch, init, data, members, device, processes=1, budget=None):
    params = {k: v.to(device) for k, v in clone(init).items()}
    total = members[0].epochs * steps_per_epoch(len(data.y_train), members[0].batch_size)
    steps = [0]

    def progress(n: int) -> None:
        steps[0] += n
        clock.check(steps[0] / total)

    sync(device)
    clock = Clock(budget)
    final = train_stacked(
        arch.forward_stacked,
        params,
        data,
        members,
        on_progress=progress,
        processes=processes,
        grads=arch.loss_grads_stacked,  # as the zoo builder trains (None for the CNN: autograd)
    )
    sync(device)
    seconds = clock.elapsed()
    return seconds, evaluate_stacked(arch.forward_stacked, final, data)["test_acc"].tolist()


def train_one_by_one(arch, init, data, members, device, clock=None) -> list[float]:
    """Each member alone as a plain module, exactly as the stacked trainer treats it; test accuracies.

    With a clock past its budget, stops after a member and returns the accuracies of those done.
    """
    n, accs = len(data.y_train), []
    for i, (m, g) in enumerate(zip(members, data_generators(members))):
        if i and clock is not None and clock.budget is not None and clock.elapsed() > clock.budget:
            clock.done = i / len(members)
            break
        module = arch.to_module(init, index=m.index).to(device)
        opt = torch.optim.SGD(module.parameters(), lr=m.lr, momentum=m.momentum, weight_decay=m.weight_decay)
        bs = m.batch_size
        for _ in range(m.epochs):
            perm = torch.randperm(n, generator=g).to(device)
            for b in range(steps_per_epoch(n, bs)):
                idx = perm[b * bs : (b + 1) * bs]
                loss = F.cross_entropy(module(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            accs.append((module(data.x_test).argmax(-1) == data.y_test).double().mean().item())
    return accs


def run_one_by_one(arch, init, data, members, device, budget=None):
    sync(device)
    clock = Clock(budget)
    clock.done = 1.0
    accs = train_one_by_one(arch, init, data, members, device, clock)
    sync(device)
    if clock.done < 1:
        raise OverBudget(clock.elapsed() / clock.done, accs)
    return clock.elapsed(), accs


def _one_by_one_worker(arch, init, data, members, queue, budget) -> None:
    torch.set_num_threads(1)
    clock = Clock(budget)
    clock.done = 1.0
    accs = train_one_by_one(arch, init, data, members, "cpu", clock)
    queue.put((members[0].index, accs, clock.done))


def run_one_by_one_processes(arch, init, data, members, processes, budget=None):
    """What a practitioner runs on a multi-core machine: one 1-thread process per core, members split."""
    mp = torch.multiprocessing.get_context("fork")
    queue = mp.SimpleQueue()
    bounds = [i * len(members) // processes for i in range(processes + 1)]
    t0 = time.perf_counter()
    procs = [
        mp.Process(target=_one_by_one_worker, args=(arch, init, data, members[lo:hi], queue, budget))
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    for p in procs:
        p.start()
    parts = {start: (accs, done) for start, accs, done in (queue.get() for _ in procs)}
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    accs = [a for start in sorted(parts) for a in parts[start][0]]
    done = min(d for _, d in parts.values())
    if done < 1:
        raise OverBudget(seconds / done, accs)
    return seconds, accs


def run_vmap_ensemble(arch, init, data, members, device, budget=None):
    """PyTorch's model-ensembling recipe, trained: vmap over stacked module states, one optimizer."""
    models = [arch.to_module(init, index=m.index).to(device) for m in members]
    params, buffers = stack_module_state(models)  # leaves (K, ...) requiring grad
    base = copy.deepcopy(models[0]).to("meta")

    def loss_of_one(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    batched_loss = vmap(loss_of_one)
    first = members[0]
    opt = torch.optim.SGD(
        params.values(), lr=first.lr, momentum=first.momentum, weight_decay=first.weight_decay
    )
    n, bs = len(data.y_train), first.batch_size
    gens = data_generators(members)
    spe = steps_per_epoch(n, bs)
    sync(device)
    clock = Clock(budget)
    for epoch in range(first.epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (K, N)
        for b in range(spe):
            clock.check((epoch * spe + b) / (first.epochs * spe))
            idx = perms[:, b * bs : (b + 1) * bs]  # (K, B)
            loss = batched_loss(params, buffers, data.x_train[idx], data.y_train[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(device)
    seconds = clock.elapsed()
    with torch.no_grad():
        logits = vmap(lambda p, b: functional_call(base, (p, b), (data.x_test,)))(
            params, buffers
        )  # (K, N, C)
        accs = (logits.argmax(-1) == data.y_test).double().mean(1).tolist()
    return seconds, accs


# ---------------------------------------------------------------------------- figures
def matmul_peak_gflops(device: str, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def matmul_ceiling_seconds(arch, k: int, batch_size: int, steps: int, device: str, timed: int = 50) -> float:
    """Seconds that `steps` stacked MLP training steps spend in their batched matmuls alone: per linear
    layer the forward x W, the weight gradient h^T g and (past the first layer) the input gradient g W^T,
    on the step's shapes, timed over `timed` steps and scaled. What the step would take were everything
    else in it (activations, loss, optimizer, batch gather) free: the ceiling of its peak fraction."""
    shapes = [s for n, s in arch.param_shapes().items() if n.endswith("weight") and len(s) == 2]
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(k, batch_size, i, generator=g).to(device) for o, i in shapes]  # (K, B, in)
    weights = [torch.randn(k, i, o, generator=g).to(device) for o, i in shapes]  # (K, in, out)
    grads = [torch.randn(k, batch_size, o, generator=g).to(device) for o, i in shapes]  # (K, B, out)

    def step():
        for layer, (h, w, gr) in enumerate(zip(acts, weights, grads)):
            torch.bmm(h, w)
            torch.bmm(h.transpose(1, 2), gr)
            if layer:
                torch.bmm(gr, w.transpose(1, 2))

    for _ in range(5):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(timed):
        step()
    sync(device)
    return (time.perf_counter() - t0) / timed * steps


def forward_macs(arch) -> int:
    """Multiply-accumulates of one example's forward pass (convolutions at full resolution, then pooled)."""
    shapes = arch.param_shapes()
    macs = sum(s[0] * s[1] for n, s in shapes.items() if n.endswith("weight") and len(s) == 2)
    spatial = list(arch.input_shape[1:])
    for n, s in shapes.items():
        if n.startswith("convs.") and n.endswith("weight"):
            macs += math.prod(spatial) * math.prod(s)  # same padding: one window per position
            spatial = [x // 2 for x in spatial]
    return macs


def training_flops(arch, k: int, batch_size: int, steps: int) -> float:
    """FLOPs of training: forward 2*B*MACs per member and step, backward twice that."""
    return 3 * 2 * batch_size * forward_macs(arch) * k * steps


def with_threads(threads: int, fn, *args, **kwargs):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


def bench_arch(name, data, args, cores, device) -> dict:
    arch = build_architecture(name, data.input_shape, data.num_classes, **ARCHS[name])
    members = [
        MemberPlan(index=i, seed=1000 + i, lr=args.lr, weight_decay=0.0, init_scale=1.0, momentum=0.9,
                   batch_size=args.batch_size, epochs=args.epochs, optimizer="sgd")
        for i in range(args.members)
    ]  # fmt: skip
    init = arch.init_stacked([m.seed for m in members], [m.init_scale for m in members])
    b = args.budget
    ways = {}  # name -> (threads, function)
    for t in args.threads:
        ways[f"stacked {t}t"] = (t, lambda: run_stacked(arch, init, data, members, device, budget=b))
    if device == "cpu":
        ways[f"stacked {cores}p x 1t"] = (1, lambda: run_stacked(arch, init, data, members, device, cores, b))
        ways[f"one by one {cores}p x 1t"] = (
            1,
            lambda: run_one_by_one_processes(arch, init, data, members, cores, b),
        )
    for t in args.threads:
        ways[f"one by one {t}t"] = (t, lambda: run_one_by_one(arch, init, data, members, device, b))
    for t in args.threads:
        ways[f"vmap {t}t"] = (t, lambda: run_vmap_ensemble(arch, init, data, members, device, b))

    warm = [dataclasses.replace(m, epochs=1) for m in members[:4]]  # untimed: first-call overheads
    with_threads(1, run_stacked, arch, {k: v[:4] for k, v in init.items()}, data, warm, device)
    with_threads(1, run_one_by_one, arch, init, data, warm[:1], device)
    with_threads(1, run_vmap_ensemble, arch, init, data, warm, device)

    steps = args.epochs * steps_per_epoch(len(data.y_train), args.batch_size)
    flops = training_flops(arch, args.members, args.batch_size, steps)
    peak = with_threads(cores, matmul_peak_gflops, device)  # all-core peak, right before the ways run
    peak_1t = with_threads(1, matmul_peak_gflops, device)
    out = {"matmul_peak_gflops": peak, "matmul_peak_gflops_1t": peak_1t, "flops": flops, "ways": {}}
    if name == "mlp":  # what limits the peak fraction: the step's matmuls alone, at each thread count
        out["matmuls_only"] = {}
        for t in args.threads:
            seconds = with_threads(
                t, matmul_ceiling_seconds, arch, args.members, args.batch_size, steps, device
            )
            # of the sgemm peak at its own thread count: one-thread workers on every core reach about
            # the 1t figure of the all-core peak
            own = peak_1t if t == 1 else peak
            out["matmuls_only"][f"{t}t"] = {"seconds": seconds, "peak_fraction": flops / seconds / 1e9 / own}
            print(f"  {name} {f'matmuls only {t}t':<22}{seconds:9.3f} s {flops / seconds / 1e9:8.2f} GFLOP/s")
    for way, (threads, fn) in ways.items():
        try:
            seconds, accs = with_threads(threads, fn)
            complete = True
        except OverBudget as stop:
            seconds, accs = stop.args
            complete = False
        gflops = flops / seconds / 1e9
        acc = statistics.fmean(accs) if accs else None
        out["ways"][way] = {
            "seconds": seconds,
            "gflops": gflops,
            "peak_fraction": gflops / peak,
            "acc_mean": acc,
            "members_scored": len(accs or []),
            "complete": complete,  # False: stopped at --budget, seconds extrapolated from the part done
        }
        note = "" if complete else f"  (over budget: extrapolated; {len(accs or [])} members scored)"
        shown = f"{100 * acc:.2f}%" if acc is not None else "-"
        print(f"  {name} {way:<22}{seconds:9.3f} s {gflops:8.2f} GFLOP/s  acc {shown}{note}")
    return out


def summarise(name: str, repeats: list[dict]) -> dict:
    """Median over repeats of each way's seconds; speedups of mole's best setting over each baseline's best."""
    ways = repeats[0]["ways"]
    med = {w: statistics.median(r["ways"][w]["seconds"] for r in repeats) for w in ways}
    best = {
        kind: min((w for w in ways if w.startswith(kind)), key=med.get)
        for kind in ("stacked", "one by one", "vmap")
    }
    flops, peak = repeats[0]["flops"], statistics.median(r["matmul_peak_gflops"] for r in repeats)
    scored = [w for w in ways if repeats[0]["ways"][w]["complete"]]  # accuracy over all K members
    acc = {w: repeats[0]["ways"][w]["acc_mean"] for w in scored}
    reference = next((w for w in sorted(scored, key=med.get) if w.startswith("one by one")), None)
    res = {
        "median_seconds": med,
        "best": best,
        "vs_one_by_one": med[best["one by one"]] / med[best["stacked"]],
        "vs_vmap": med[best["vmap"]] / med[best["stacked"]],
        "peak_fraction": flops / med[best["stacked"]] / 1e9 / peak,
        # against the fastest one-by-one way that finished; None when none did (all over --budget)
        "acc_within_points": max(abs(acc[w] - acc[reference]) for w in scored) * 100 if reference else None,
    }
    if "matmuls_only" in repeats[0]:  # the best the step's matmuls alone reach: the peak fraction's ceiling
        # (assumes the thread counts run are 1 and the number of cores, as by default)
        fractions = {
            t: [r["matmuls_only"][t]["peak_fraction"] for r in repeats] for t in repeats[0]["matmuls_only"]
        }
        res["matmuls_only_peak_fraction"] = max(statistics.median(f) for f in fractions.values())
    targets = TARGETS[name]
    res["met"] = {
        k: None if res[k] is None else (res[k] <= v if k.startswith("acc") else res[k] >= v)
        for k, v in targets.items()
    }
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument("--arch", nargs="+", default=["mlp", "cnn"], choices=sorted(ARCHS), help="architectures")
    p.add_argument("--members", type=int, default=128, help="K, members trained (default 128)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per member (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size per member (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, momentum 0.9 (default 0.05)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument(
        "--processes", type=int, default=None, help="processes for the all-core ways (default: cores)"
    )
    p.add_argument("--repeats", type=int, default=1, help="run everything this many times (default 1)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per way; a way past it stops and its time is extrapolated (default: none)",
    )
    p.add_argument("--device", default="cpu", help='"cpu" (default) or "cuda" (no multi-process ways)')
    args = p.parse_args(argv)
    device, cores = args.device, args.processes or default_processes()
    data = load_task("digits").to(device)
    load_before = os.getloadavg()
    repeats = []
    for r in range(args.repeats):
        print(f"B1 repeat {r + 1}/{args.repeats} (load average {os.getloadavg()[0]:.2f})")
        repeats.append({name: bench_arch(name, data, args, cores, device) for name in args.arch})
        write_json(args.out, {"repeats": repeats, "partial": True})  # kept should a later step fail
    summary = {name: summarise(name, [rep[name] for rep in repeats]) for name in args.arch}
    res = {
        "config": dict(members=args.members, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       threads=args.threads, processes=cores, budget=args.budget, cores=os.cpu_count(), device=device,
                       torch=torch.__version__, repeats=args.repeats),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "repeats": repeats,
        "summary": summary,
        "targets": TARGETS,
        # scripts/bench_all.py's B1 row: the first architecture's best stacked over best one by one
        "speedup": summary[args.arch[0]]["vs_one_by_one"],
    }  # fmt: skip
    for name, s in summary.items():
        print(
            f"B1 {name}: best stacked = {s['best']['stacked']} ({s['median_seconds'][s['best']['stacked']]:.3f} s)"
        )
        for key, target in TARGETS[name].items():
            cmp = "<=" if key.startswith("acc") else ">="
            verdict = {True: "ok", False: "MISS", None: "not measured (over --budget)"}[s["met"][key]]
            shown = "-" if s[key] is None else f"{s[key]:.3f}"
            print(f"  {key:<20}{shown:>10}   target {cmp} {target}: {verdict}")
        if "matmuls_only_peak_fraction" in s:
            print(
                f"  {'matmuls alone reach':<20}{s['matmuls_only_peak_fraction']:>10.3f}   of the peak (the ceiling)"
            )
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
