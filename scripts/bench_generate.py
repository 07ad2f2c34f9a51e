"""B2 / B3 / B4 / B7 on the embedded default: train a denoiser on a zoo's dense members, sample, measure.

    python scripts/bench_generate.py --out runs/bench_generate.json [--zoo ZOO] [--train-steps N]

Without --zoo the default digits zoo (mole/zoo/quickstart.yaml) is built into a temporary folder.
The denoiser trains (Lightning, through mole.diffusion.system) on the dense rows of every snapshot
(init to final, so the test accuracy condition spans the zoo's range), with the quickstart's loss (weight
MSE plus the function-space KL term of mole.diffusion.function_loss, gradients clipped), then:
    acc_generated_mean  one network per final SGD-trained member, prompted with that member's test
                        accuracy (variant dense); acc_zoo_mean is the mean of those accuracies (B2:
                        acc_ratio >= 0.97)
    spearman_prompt     prompts evenly spaced over the trained test accuracy range, several networks
                        each; Spearman between prompted and achieved test accuracy (B3: >= 0.9)
    nn_cosine_median    cosine similarity of each B2 network to its nearest training row (flat params,
    frac_novel          both weight-matched to one reference); the share below 0.98 (B4: >= 0.9)
    nets_per_s_sampling networks per second of the B2 batch (DDIM steps, guidance, projection)
    train_steps_per_s   denoiser training steps per second
Prints the figures and writes them (with the settings and a `met` dict) as JSON, atomically.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

TARGETS = {"acc_ratio": 0.97, "spearman_prompt": 0.9, "frac_novel": 0.9}


def build_default_zoo(root: Path) -> Path:
    from mole.zoo.build import build_zoo
    from mole.zoo.spec import ZooSpec

    with resources.as_file(resources.files("mole.zoo") / "quickstart.yaml") as path:
        spec = ZooSpec.from_yaml(path)
    return build_zoo(spec, root / "zoo", progress=False).zoo


def train(zoo: Path, run: Path, args) -> tuple[Path, float, object]:
    """Train through the training side's API; return (model folder, steps per second, data module).

    The train split is tokenized once and held in memory (a few hundred rows here), so the timing
    measures the denoiser, not per-item tokenization.
    """
    import lightning as L
    from torch.utils.data import DataLoader

    from mole.diffusion.conditioning import model_args
    from mole.diffusion.datamodule import ZooDataModule, collate
    from mole.diffusion.denoiser import Denoiser
    from mole.diffusion.function_loss import FunctionLoss
    from mole.diffusion.model_dir import export_model
    from mole.diffusion.system import DiffusionSystem

    L.seed_everything(args.seed, verbose=False)
    dm = ZooDataModule(
        str(zoo),
        variants=["dense"],
        batch_size=args.batch_size,
        tokenizer_options={
            "canonical": False if args.canonical == "none" else args.canonical,
            "stats_per": args.stats_per,
        },
        cache_dir=str(run / "cache"),
    )
    denoiser = Denoiser(
        **model_args(dm),
        width=args.width,
        depth=args.depth,
        heads=args.heads,
        global_rank=args.global_rank,
    )
    system = DiffusionSystem(
        denoiser, prediction_type=args.prediction_type, lr=args.lr, warmup_steps=100, ema_decay=0.995,
        function_loss=args.function_loss, function_sparsities=args.function_sparsities or None,
    )  # fmt: skip
    if args.function_loss:
        dm.setup()
        system.function = FunctionLoss.from_datamodule(
            dm, args.function_inputs, sparsities=args.function_sparsities
        )
    items = [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    loader = DataLoader(
        items,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )
    trainer = L.Trainer(
        max_steps=args.train_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=args.gradient_clip_val,
    )
    t0 = time.perf_counter()
    trainer.fit(system, train_dataloaders=loader)
    seconds = time.perf_counter() - t0
    return export_model(system, dm, run / "model"), args.train_steps / seconds, dm


def accuracies(members, data) -> np.ndarray:
    from mole.diffusion.generated import evaluate

    return evaluate(members, data)["test_acc"].numpy()


def nearest_cosine(generated, train_members) -> np.ndarray:
    """(N,) cosine of each generated net to its nearest training member, both weight-matched to the
    training members' MergeMany reference (mole.eval's novelty alignment: a permuted copy scores 1)."""
    from mole.eval.base import flat_params, unit_rows
    from mole.tokenizer.canonical import match_reference

    ref = match_reference(train_members[:256])
    a = unit_rows([flat_params(m, "match", ref) for m in generated])  # (N, P)
    b = unit_rows([flat_params(m, "match", ref) for m in train_members])  # (M, P)
    return (a @ b.T).max(1)  # (N,)


def main() -> None:
    from mole.pipeline import preset

    w, q = preset("default")["weights"], preset("default")["sample"]  # defaults: the quickstart's
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--zoo", default=None, help="zoo folder (default: build quickstart.yaml in a temp dir)")
    p.add_argument("--train-steps", type=int, default=w["steps"])
    p.add_argument("--width", type=int, default=w["width"], help="denoiser width")
    p.add_argument("--depth", type=int, default=w["depth"], help="denoiser blocks")
    p.add_argument("--heads", type=int, default=w["heads"], help="attention heads")
    p.add_argument(
        "--canonical", default="match", choices=["none", "sort", "match"],
        help="neuron order in the tokenizer (match: weight matching to the zoo's aligned mean)",
    )  # fmt: skip
    p.add_argument(
        "--stats-per", default="column", choices=["column", "tensor", "element"],
        help="token normalisation (element: each weight by its own mean and std over the aligned zoo)",
    )  # fmt: skip
    p.add_argument(
        "--global-rank",
        type=int,
        default=w["global_rank"],
        help="rank of the denoiser's global linear path (0: none)",
    )
    p.add_argument("--batch-size", type=int, default=w["batch_size"])
    p.add_argument("--lr", type=float, default=w["lr"])
    p.add_argument("--prediction-type", default="sample")
    p.add_argument(
        "--function-loss", type=float, default=w["function_loss"],
        help="weight of the function-space KL term (mole.diffusion.function_loss; 0: weight MSE only)",
    )  # fmt: skip
    p.add_argument(
        "--function-inputs", type=int, default=w["function_inputs"], help="training inputs the KL term reads"
    )
    p.add_argument(
        "--function-sparsities", type=float, nargs="*", default=w["function_sparsities"],
        help="the KL term also on the prediction magnitude-pruned at one of these (none: dense only)",
    )  # fmt: skip
    p.add_argument(
        "--gradient-clip-val",
        type=float,
        default=w["gradient_clip_val"],
        help="gradient norm clipping (0: none)",
    )
    p.add_argument("--steps", type=int, default=q["steps"], help="DDIM steps (the quickstart's)")
    p.add_argument(
        "--guidance", type=float, default=q["guidance"], help="classifier-free guidance (the quickstart's)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="initial noise scale")
    p.add_argument("--prompts", type=int, default=16, help="B3: prompts over the accuracy range")
    p.add_argument("--per-prompt", type=int, default=4, help="B3: networks per prompt")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from mole.data import load_task
    from mole.diffusion.model_dir import load_model
    from mole.diffusion.options import SampleOptions
    from mole.diffusion.sample import sample
    from mole.tokenizer import MemberTensors
    from mole.zoo import store

    with tempfile.TemporaryDirectory(prefix="bench_generate.") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        zoo = Path(args.zoo) if args.zoo else build_default_zoo(tmp)
        zoo_seconds = time.perf_counter() - t0
        model_dir, steps_per_s, dm = train(zoo, tmp, args)
        model = load_model(model_dir)
        meta = model[3]
        rows = store.read_zoo(zoo).to_pylist()
        dense = [r for r in rows if r["variant"] == "dense"]
        data = load_task(dense[0]["task"], **json.loads(dense[0]["task_options"]))
        train_idx = set(dm.splits["train"].tolist())
        train_members = [MemberTensors.from_row(r) for r in dense if r["member_index"] in train_idx]
        finals = [r for r in dense if r["final"]]

        # B2 + B7 + B4: one network per final SGD member, prompted with its accuracy
        lo, hi = meta["conditions"]["test_acc"]["min"], meta["conditions"]["test_acc"]["max"]
        prompts = [min(max(r["test_acc"], lo), hi) for r in finals]
        t0 = time.perf_counter()
        options = SampleOptions(
            steps=args.steps, guidance=args.guidance, seed=args.seed, batch_size=len(prompts),
            temperature=args.temperature,
        )  # fmt: skip
        gen = sample(model_dir, {"test_acc": prompts, "variant": "dense"}, len(prompts), options, model=model)
        sample_seconds = time.perf_counter() - t0
        acc_gen = accuracies(gen, data)
        acc_zoo = np.asarray([r["test_acc"] for r in finals])
        cos = nearest_cosine(gen, train_members)

        # B3: prompts spanning the trained range
        sweep = np.repeat(np.linspace(lo, hi, args.prompts), args.per_prompt).tolist()
        options = SampleOptions(
            steps=args.steps, guidance=args.guidance, seed=args.seed + 1, batch_size=64,
            temperature=args.temperature,
        )  # fmt: skip
        gen3 = sample(model_dir, {"test_acc": sweep, "variant": "dense"}, len(sweep), options, model=model)
        acc3 = accuracies(gen3, data)
        rho = float(spearmanr(sweep, acc3).statistic)

    result = {
        "train_steps_per_s": steps_per_s,
        "nets_per_s_sampling": len(gen) / sample_seconds,
        "acc_generated_mean": float(acc_gen.mean()),
        "acc_zoo_mean": float(acc_zoo.mean()),
        "acc_ratio": float(acc_gen.mean() / acc_zoo.mean()),
        "spearman_prompt": rho,
        "nn_cosine_median": float(np.median(cos)),
        "frac_novel": float((cos < 0.98).mean()),
        "prompt_range": [lo, hi],
        "b3_mean_acc_per_prompt": acc3.reshape(args.prompts, -1).mean(1).round(4).tolist(),
        "settings": {**vars(args), "zoo_seconds": zoo_seconds, "threads": torch.get_num_threads()},
    }
    result["met"] = {
        "acc_ratio": result["acc_ratio"] >= TARGETS["acc_ratio"],
        "spearman_prompt": rho >= TARGETS["spearman_prompt"],
        "frac_novel": result["frac_novel"] >= TARGETS["frac_novel"]
        and result["acc_ratio"] >= TARGETS["acc_ratio"],
    }
    from mole.zoo.store import write_json

    write_json(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1))


if __name__ == "__main__":
    main()
