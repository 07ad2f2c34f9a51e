"""Generation for CNN members end to end: a tiny digits CNN zoo (the digits_cnn net) -> weight-matched
neuron tokens -> a DiffusionSystem with the function-space loss (budgeted) -> dense and sparse generated
zoos -> the report's B2, B3, B4 and B5 sections."""

from __future__ import annotations

import json
import math
import re

import lightning as L
import pytest
import torch

from mole.baselines.run import run_baselines
from mole.data import load_task
from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.function_loss import FunctionLoss, activation_cost
from mole.diffusion.generated import generate_zoo
from mole.diffusion.model_dir import export_model
from mole.diffusion.options import SampleOptions
from mole.diffusion.system import DiffusionSystem
from mole.eval import load_rows
from mole.eval.base import prompt_of
from mole.eval.run import evaluate_zoos
from mole.tokenizer import MemberTensors
from mole.zoo.build import build_zoo
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO

NET = {"channels": [8, 16], "kernel_size": 3, "hidden": [32]}  # configs/zoo/digits_cnn.yaml's net
CNN_ZOO = {**TINY_ZOO, "name": "tiny-cnn", "architecture": "cnn", "arch_options": NET,
           "hparams": {"lr": {"low": 0.05, "high": 0.1, "log": True}, "momentum": 0.9, "init_scale": [1.0],
                       "batch_size": [32], "epochs": [3]}}  # fmt: skip
SPARSITIES = [0.5, 0.8]  # 0.8 of the net's 3592 weights is 2873.6: exact top-k removes 2874
BUDGET_INPUTS = 32  # the function-space term's inputs under the test's budget (function_inputs: 64)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn-zoo") / "zoo"
    build_zoo(ZooSpec.from_dict(CNN_ZOO), out, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(zoo, tmp_path_factory):
    """(data module, system, model folder): a few Trainer steps with the function-space term, exported."""
    out = tmp_path_factory.mktemp("cnn-model")
    dm = ZooDataModule(str(zoo), tokenizer_options={"canonical": "match"}, batch_size=16,
                       fractions=(1.0, 0.0, 0.0), cache_dir=str(out / "cache"))  # fmt: skip
    dm.setup()
    torch.manual_seed(0)
    arch = MemberTensors("cnn", dm.tokenizer.arch_config, {}).arch
    system = DiffusionSystem(Denoiser(**model_args(dm), width=32, depth=1, heads=2), ema_decay=0.9, warmup_steps=1,
                             function_loss=1.0, function_inputs=64, function_sparsities=SPARSITIES,
                             function_budget=BUDGET_INPUTS * activation_cost(arch))  # fmt: skip
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(system, datamodule=dm)
    return dm, system, export_model(system, dm, out / "model")


@pytest.fixture(scope="module")
def generated(zoo, trained, tmp_path_factory):
    """Dense nets prompted with test accuracies over the zoo's range, a sparse set projected onto
    SPARSITIES, and magnitude-pruning baselines of the zoo's members."""
    _, _, model = trained
    out = tmp_path_factory.mktemp("cnn-generated")
    acc = sorted(r["test_acc"] for r in load_rows(zoo, final_only=False))
    prompts = [acc[len(acc) * q // 4] for q in (1, 2, 3)] + [acc[-1]]
    dense, _ = generate_zoo(model, out / "dense", {"test_acc": prompts, "variant": "dense"}, 4,
                            SampleOptions(steps=3, guidance=2.0))  # fmt: skip
    sparse, _ = generate_zoo(model, out / "sparse", {"test_acc": acc[-1], "variant": "dense"}, 4,
                             SampleOptions(steps=3, seed=1), project={"sparsity": SPARSITIES * 2})  # fmt: skip
    run_baselines(load_rows(zoo), load_task("digits"),
                  {"magnitude": {"sparsity": SPARSITIES, "scope": "global"}}, out / "pruning")  # fmt: skip
    return {"dense": dense, "sparse": sparse, "pruning": out / "pruning"}


def zoo_members(zoo) -> list[MemberTensors]:
    return [MemberTensors.from_row(r) for r in load_rows(zoo)]


def test_the_function_loss_reads_cnn_tokens(zoo, trained, digits):
    dm, system, _ = trained
    fn, tok = system.function.losses[0], dm.tokenizer
    assert fn.arch.name == "cnn" and fn.inputs.shape[0] == BUDGET_INPUTS  # the budget, not function_inputs
    a, b = zoo_members(zoo)[:2]
    tokens = torch.stack([tok.normalize(*tok.tokenize(m)) for m in (a, b)])  # (2, T, D), weight-matched
    params = fn.params(tokens)
    x = digits.x_train[:64]
    for i, m in enumerate((a, b)):  # decoded in the graph: the member's function (matching permutes channels)
        got = fn.arch.forward_stacked({k: v[i : i + 1] for k, v in params.items()}, x)[0]
        torch.testing.assert_close(got, m.arch.to_module(m.params).eval()(x), atol=1e-4, rtol=1e-4)
    dense = FunctionLoss(tok, fn.inputs)  # the system's term also scores pruned copies: never 0
    assert dense(tokens[:1], tokens[:1]).item() == pytest.approx(0.0, abs=1e-6)
    other = tokens[1:].clone().requires_grad_()
    loss = dense(other, tokens[:1])  # another member's net against a's outputs
    loss.backward()
    assert loss.item() > 1e-3 and other.grad.abs().sum() > 0
    assert fn(tokens[1:], tokens[:1]).item() > 1e-3


def test_sampled_nets_are_cnn_members_of_the_zoo(zoo, generated, digits):
    arch = zoo_members(zoo)[0].arch
    n_weights = sum(math.prod(arch.param_shapes()[w]) for w in arch.weight_names())  # 3592
    for name in ("dense", "sparse"):
        rows = load_rows(generated[name])
        assert len(rows) == 4
        for row in rows:
            m = MemberTensors.from_row(row)  # validates every field against the architecture
            assert (m.architecture, m.arch_config) == ("cnn", arch.config())
            assert {k: tuple(v.shape) for k, v in m.params.items()} == arch.param_shapes()
            assert m.arch.to_module(m.params).eval()(digits.x_test[:8]).shape == (8, 10)
            if name == "dense":
                assert m.mask is None and row["sparsity"] == 0.0
                continue
            level = prompt_of(row)["sparsity"]
            removed = sum(int((~m.mask[w]).sum()) for w in arch.weight_names())
            assert removed == round(level * n_weights) and row["sparsity"] == removed / n_weights
            for name_, keep in m.mask.items():
                assert bool((m.params[name_][~keep] == 0).all())
                if name_ not in arch.weight_names():
                    assert bool(keep.all())  # biases are never pruned
    assert sorted(prompt_of(r)["sparsity"] for r in load_rows(generated["sparse"])) == sorted(SPARSITIES * 2)


def test_the_report_judges_cnn_nets(zoo, generated, tmp_path):
    out = tmp_path / "report"
    report = evaluate_zoos([generated["dense"], generated["sparse"]], out, reference=zoo,
                           baselines=[generated["pruning"]], progress=False)  # fmt: skip
    text = report.read_text()
    lines = text.splitlines()
    for heading in ("## Generated vs SGD (B2)", "## Prompt alignment (B3)", "## Memorization test (B4)",
                    "## Sparse networks (B5)"):  # fmt: skip
        assert heading in lines
    results = json.loads((out / "results.json").read_text())
    assert {"acc_ratio", "spearman_prompt", "memorization_parts_met", "sparse_vs_baselines_met"} <= set(
        results["benchmarks"]
    )
    assert set(results["memorization"]) == {"dense"}
    b5 = text[text.index("## Sparse networks (B5)") : text.index("## Constraints")]
    for level in SPARSITIES:  # magnitude pruning at every generated level, 0.8 included
        row = re.search(rf"^\| {level:.3f} \| ([^|]+) \| ([^|]+) \|", b5, re.M)
        assert row and row.group(1).strip() != "-" and row.group(2).strip() != "-", b5
