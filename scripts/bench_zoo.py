"""Benchmark B1: stacked zoo training vs. training the same members one by one.

Trains K copies of the MLP 64-32-32-10 on the digits task twice:

* stacked: all K members at once with `mole.zoo.train.train_stacked` (batched matmuls);
* sequential: each member alone as a plain nn.Module with torch.optim.SGD, with the same
  init, hyperparameters and per-member data order as the stacked trainer.

Reports wall-clock seconds of both, the speedup, mean test accuracy of both (they should agree,
since the two runs compute the same thing), the stacked run's achieved GFLOP/s (analytic matmul
FLOPs: forward 2*B*sum(in*out)*K per step, training ~3x forward) and that as a fraction of a
large float32 matmul's GFLOP/s measured in the same process. Writes the numbers as JSON.

    .venv/bin/python scripts/bench_zoo.py --out b1.json [--members 128 --epochs 10 --batch-size 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.data import load_task
from mole.nets import build_architecture
from mole.zoo.plan import MemberPlan
from mole.zoo.train import data_generators, evaluate_stacked, steps_per_epoch, train_stacked

TARGETS = {"speedup": 20, "acc_within_points": 1, "peak_fraction": 0.3}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clone(params: dict) -> dict:
    return {k: v.detach().clone() for k, v in params.items()}


def run_stacked(arch, params, data, members, device):
    params = {k: v.to(device) for k, v in params.items()}
    sync(device)
    t0 = time.perf_counter()
    final = train_stacked(arch.forward_stacked, params, data, members)
    sync(device)
    seconds = time.perf_counter() - t0
    acc = evaluate_stacked(arch.forward_stacked, final, data)["test_acc"]
    return seconds, acc


def run_sequential(arch, params_init, data, members, device):
    """Each member alone, exactly as the stacked trainer treats it: own init and data order."""
    n = len(data.y_train)
    accs, seconds = [], 0.0
    for m, g in zip(members, data_generators(members)):
        module = arch.to_module(params_init, index=m.index).to(device)
        opt = torch.optim.SGD(module.parameters(), lr=m.lr, momentum=m.momentum, weight_decay=m.weight_decay)
        bs = m.batch_size
        sync(device)
        t0 = time.perf_counter()
        for _ in range(m.epochs):
            perm = torch.randperm(n, generator=g).to(device)
            for b in range(steps_per_epoch(n, bs)):
                idx = perm[b * bs : (b + 1) * bs]
                loss = F.cross_entropy(module(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        sync(device)
        seconds += time.perf_counter() - t0
        with torch.no_grad():
            accs.append((module(data.x_test).argmax(-1) == data.y_test).double().mean().item())
    return seconds, torch.tensor(accs, dtype=torch.float64)


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


def training_flops(arch, k: int, batch_size: int, steps: int) -> float:
    """Matmul FLOPs of training: forward 2*B*sum(in*out)*K per step, backward twice that."""
    macs = sum(s[0] * s[1] for n, s in arch.param_shapes().items() if n.endswith("weight"))
    return 3 * 2 * batch_size * macs * k * steps


def write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the results to")
    p.add_argument("--members", type=int, default=128, help="K, members trained (default 128)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per member (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size per member (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, momentum 0.9 (default 0.05)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu", help='"cpu" (default) or "cuda"')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device

    data = load_task("digits").to(device)
    arch = build_architecture("mlp", data.input_shape, data.num_classes, hidden=[32, 32])
    members = [
        MemberPlan(index=i, seed=1000 + i, lr=args.lr, weight_decay=0.0, init_scale=1.0, momentum=0.9,
                   batch_size=args.batch_size, epochs=args.epochs, optimizer="sgd")
        for i in range(args.members)
    ]  # fmt: skip
    params_init = arch.init_stacked([m.seed for m in members], [m.init_scale for m in members])

    warm = [dataclasses.replace(m, epochs=1) for m in members[:8]]  # untimed: first-call overheads
    run_stacked(arch, clone({k: v[:8] for k, v in params_init.items()}), data, warm, device)
    run_sequential(arch, params_init, data, warm[:1], device)

    peak = matmul_peak_gflops(device)  # right before the stacked run: same machine state (VMs throttle)
    sec_st, acc_st = run_stacked(arch, clone(params_init), data, members, device)
    sec_seq, acc_seq = run_sequential(arch, params_init, data, members, device)
    steps = args.epochs * steps_per_epoch(len(data.y_train), args.batch_size)
    gflops = training_flops(arch, args.members, args.batch_size, steps) / sec_st / 1e9

    acc_st_m, acc_seq_m = acc_st.mean().item(), acc_seq.mean().item()
    res = {
        "speedup": sec_seq / sec_st,
        "seconds_stacked": sec_st,
        "seconds_sequential": sec_seq,
        "acc_stacked_mean": acc_st_m,
        "acc_sequential_mean": acc_seq_m,
        "acc_mean_diff_points": abs(acc_st_m - acc_seq_m) * 100,
        "acc_member_max_diff_points": (acc_st - acc_seq).abs().max().item() * 100,
        "gflops_stacked": gflops,
        "matmul_peak_gflops": peak,
        "peak_fraction": gflops / peak,
        "config": dict(members=args.members, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       steps=steps, threads=torch.get_num_threads(), device=device, torch=torch.__version__),
        "targets": TARGETS,
    }  # fmt: skip
    res["met"] = {
        "speedup": res["speedup"] >= TARGETS["speedup"],
        "acc_within_points": res["acc_mean_diff_points"] <= TARGETS["acc_within_points"],
        "peak_fraction": res["peak_fraction"] >= TARGETS["peak_fraction"],
    }
    print("B1 " + " ".join(f"{k}={v}" for k, v in res["config"].items()))
    mark = {k: f"target {'<=' if k.startswith('acc') else '>='} {v}: {'ok' if res['met'][k] else 'MISS'}"
            for k, v in TARGETS.items()}  # fmt: skip
    rows = [
        ("seconds stacked", f"{sec_st:.3f}", ""),
        ("seconds sequential", f"{sec_seq:.3f}", ""),
        ("speedup", f"{res['speedup']:.2f}x", mark["speedup"]),
        ("test acc stacked (mean)", f"{100 * acc_st_m:.2f}%", ""),
        ("test acc sequential (mean)", f"{100 * acc_seq_m:.2f}%", ""),
        ("acc mean diff (points)", f"{res['acc_mean_diff_points']:.3f}", mark["acc_within_points"]),
        ("acc max member diff (points)", f"{res['acc_member_max_diff_points']:.3f}", ""),
        ("GFLOP/s stacked", f"{gflops:.2f}", ""),
        ("GFLOP/s matmul peak (fp32)", f"{peak:.2f}", ""),
        ("peak fraction", f"{res['peak_fraction']:.4f}", mark["peak_fraction"]),
    ]
    for name, value, target in rows:
        print(f"  {name:<30}{value:>12}   {target}")
    write_json_atomic(args.out, res)
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
