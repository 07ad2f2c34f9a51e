"""Learning to learn: starts (member snapshots, fresh inits), updates chained K times, `mole sample --start`."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

from mole.cli import main
from mole.diffusion import update as upd
from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.model_dir import export_model, load_model
from mole.diffusion.options import SampleOptions
from mole.diffusion.sample import sample_weights
from mole.diffusion.system import DiffusionSystem
from mole.errors import ConfigError
from mole.eval.learn import flat
from mole.tokenizer import MemberTensors, NeuronTokenizer
from mole.zoo import store
from tests.diffusion.test_system import fit
from tests.tokenizer.helpers import tiny_zoo

TINY = {"width": 32, "depth": 1, "heads": 2}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def rows(zoo):
    return store.read_zoo(zoo).to_pylist()


@pytest.fixture(scope="module")
def pairs_model(zoo, cache, tmp_path_factory):
    """An (untrained) pairs model folder on the tiny zoo: what chaining and starts need."""
    dm = ZooDataModule(str(zoo), mode="pairs", batch_size=4, cache_dir=cache)
    torch.manual_seed(0)
    system = DiffusionSystem(Denoiser(**model_args(dm), **TINY, context_skip=True))
    return export_model(system, dm, tmp_path_factory.mktemp("pairs") / "model")


# ---------------------------------------------------------------------------- starts
def test_a_start_reference_names_a_members_snapshot(zoo, rows):
    member = rows[0]["member_id"]
    steps = sorted(r["step"] for r in rows if r["member_id"] == member)
    start = upd.load_start(f"{zoo}:{member}@{steps[1]}")
    row = next(r for r in rows if r["member_id"] == member and r["step"] == steps[1])
    assert start.ref == f"{zoo}:{member}@{steps[1]}"
    assert torch.equal(flat(start.member), torch.tensor(row["params"]))
    assert upd.load_start(f"{zoo}:{member}").ref.endswith(f"@{steps[-1]}")  # no @STEP: the final one


@pytest.mark.parametrize(
    "ref, needle",
    [
        ("nonsense", "start: cannot read 'nonsense'"),
        ("/nowhere:m@1", "start: no zoo folder '/nowhere'"),
        ("{zoo}:tiny-nope", "start: no member 'tiny-nope'"),
        ("{zoo}:{member}@999", "has no snapshot at step 999; its steps: 0, 10"),
    ],
)
def test_a_bad_start_reference_is_one_line_naming_start(zoo, rows, ref, needle):
    with pytest.raises(ConfigError, match="^start: ") as e:
        upd.load_start(ref.format(zoo=zoo, member=rows[0]["member_id"]))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_start_init_is_the_architectures_initialiser_and_never_a_training_member(pairs_model, rows):
    meta = load_model(pairs_model)[3]
    taken = upd.training_seeds(meta["zoo"])
    assert set(taken) == {r["seed"] for r in rows}
    arch = MemberTensors.from_row(rows[0]).arch
    seeds = upd.unseen_seeds(taken, 24)
    assert not set(seeds) & set(taken)
    starts = [upd.fresh_init(meta, s) for s in seeds]
    for seed, s in zip(seeds, starts):  # bit for bit the initialiser at scale 1
        want = arch.init_stacked([seed])
        assert all(torch.equal(s.member.params[n], want[n][0]) for n in want) and s.ref == f"init:{seed}"
    for name in arch.param_shapes():  # its distribution: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        values = torch.cat([s.member.params[name].flatten() for s in starts])
        bound = 1 / math.sqrt(arch.fan_in(name))
        assert values.abs().max() <= bound
        assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    zoo_params = torch.stack([torch.tensor(r["params"]) for r in rows])  # (R, P)
    for s in starts:  # no fresh init is any row of the zoo
        assert (zoo_params - flat(s.member)[None]).abs().amax(1).min() > 1e-3
    seed = rows[0]["seed"]
    with pytest.raises(
        ConfigError, match=f"^start_init: seed {seed} is training member '{rows[0]['member_id']}'"
    ):
        upd.fresh_init(meta, seed)
    with pytest.raises(ConfigError, match="^start_init: must be an integer seed >= 0"):
        upd.fresh_init(meta, -1)


def test_start_init_of_a_model_of_several_cells_draws_the_prompted_network(zoo, rows):
    """A mixed model's fresh init is of the cell its prompt picks; without one, a one-line error."""
    mlp = {"architecture": "mlp", "arch_config": {"input_shape": [64], "num_classes": 10, "hidden": [8]}}
    cnn = {"architecture": "cnn", "arch_config": {"input_shape": [1, 8, 8], "num_classes": 10,
                                                  "channels": [4], "hidden": [8]}}  # fmt: skip
    cells = [{**c, "task": "digits", "task_options": {}, "variants": ["dense"]} for c in (mlp, cnn)]
    meta = {"cells": cells, "zoo": [str(zoo), str(zoo)],
            "conditions": {"architecture": {"kind": "categorical", "vocab": ["cnn", "mlp"]}}}  # fmt: skip
    for cell in (mlp, cnn):
        start = upd.fresh_init(
            meta, 10**6, {}, prompt={"architecture": cell["architecture"], "test_loss": 1.0}
        )
        want = MemberTensors(cell["architecture"], cell["arch_config"], {}).arch.init_stacked([10**6])
        assert start.member.architecture == cell["architecture"]
        assert all(torch.equal(start.member.params[n], want[n][0]) for n in want)
    with pytest.raises(ConfigError, match="^conditions: 2 shapes fit the prompt") as e:
        upd.fresh_init(meta, 10**6, {})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="^conditions.architecture: unknown value 'vit'"):
        upd.fresh_init(meta, 10**6, {}, prompt={"architecture": "vit"})
    assert upd.training_seeds(meta["zoo"]) == upd.training_seeds(zoo)  # a list of zoos: the union
    with pytest.raises(ConfigError, match=f"^start_init: seed {rows[0]['seed']} is training member"):
        upd.fresh_init(meta, rows[0]["seed"], prompt={"architecture": "mlp"})


def test_an_update_in_the_starts_canonical_order_comes_back_in_the_starts_own(zoo, rows):
    """With a canonical tokenizer the start is drawn from in its canonical neuron order; the update is
    put back in the start's own. A denoiser that predicts its context returns the start itself."""

    class Copy(torch.nn.Module):  # x0 = the start's tokens, whatever the noise
        def __init__(self, token_dim: int):
            super().__init__()
            self.config = SimpleNamespace(token_dim=token_dim)

        def forward(self, x, t, cond=None, **kw):
            return kw["context"].clone()

    members = [MemberTensors.from_row(r) for r in rows if r["variant"] == "dense"]
    tok = NeuronTokenizer(canonical="sort").fit(members)
    start = members[-1]
    _, perm = tok.reorder(start)
    assert any(p != sorted(p) for p in perm.values())  # the canonical order moves its neurons
    copy = Copy(tok.plan(start.architecture, start.arch_config, [], None)["shape"][1])
    meta = {"architecture": start.architecture, "arch_config": start.arch_config, "normalized": True}
    out, _ = sample_weights(copy, DDPMScheduler(prediction_type="sample", clip_sample=False), tok, meta, {}, 2,
                            SampleOptions(steps=3), [start], lambda n: None)  # fmt: skip
    for m in out:
        for n, p in start.params.items():
            torch.testing.assert_close(m.params[n], p, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- chains
def test_updates_chain_each_from_the_last_output(pairs_model, zoo, rows, digits, monkeypatch):
    """Update k + 1's context is update k's output (the very members), its start condition their
    measured loss; the prompt stays the same."""
    model = load_model(pairs_model)
    contexts, prompts = [], []
    real = upd.sample

    def spy(model_dir, conditions, num, options, context, **kw):
        contexts.append(list(context))
        prompts.append(dict(conditions))
        return real(model_dir, conditions, num, options, context, **kw)

    monkeypatch.setattr(upd, "sample", spy)
    loss = (model[3]["conditions"]["test_loss"]["min"] + model[3]["conditions"]["test_loss"]["max"]) / 2
    first = upd.load_start(f"{zoo}:{rows[0]['member_id']}@0")
    out = upd.update_chain(model, [first], {"test_loss": loss}, 2, 3, digits, SampleOptions(steps=2))
    assert len(out) == 6 and [m.extra["update"] for m in out] == [1, 1, 2, 2, 3, 3]
    assert all(c is first.member for c in contexts[0])
    for k in (1, 2):
        assert all(a is b for a, b in zip(contexts[k], out[(k - 1) * 2 : k * 2]))
        assert [m.extra["start"]["row"] for m in out[k * 2 : (k + 1) * 2]] == [(k - 1) * 2, (k - 1) * 2 + 1]
    assert all(p["test_loss"] == [loss, loss] for p in prompts)
    measured = upd.evaluate(out[:2], digits)["test_loss"].tolist()
    lo, hi = (
        model[3]["conditions"]["start_test_loss"]["min"],
        model[3]["conditions"]["start_test_loss"]["max"],
    )
    assert prompts[1]["start_test_loss"] == [min(max(v, lo), hi) for v in measured]
    assert [m.extra["start"]["test_loss"] for m in out[2:4]] == pytest.approx(measured)


def test_sample_start_with_updates_writes_every_update_with_its_start(
    pairs_model, zoo, rows, tmp_path, capsys
):
    member = rows[0]["member_id"]
    loss = rows[0]["test_loss"]
    out = tmp_path / "updated"
    argv = ["sample", str(pairs_model), "--out", str(out), "--num", "2", "--steps", "2", "--progress", "false",
            "--start", f"{zoo}:{member}@10", "--updates", "3", "--conditions", json.dumps({"test_loss": loss})]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    got = sorted(store.read_zoo(out).to_pylist(), key=lambda r: r["member_index"])
    assert [r["step"] for r in got] == [1, 1, 2, 2, 3, 3]
    extra = [json.loads(r["extra"]) for r in got]
    assert {e["start"]["ref"] for e in extra} == {f"{zoo}:{member}@10"}
    start_row = next(r for r in rows if r["member_id"] == member and r["step"] == 10)
    assert extra[0]["start"]["test_loss"] == pytest.approx(start_row["test_loss"], rel=1e-5)
    for i in range(2, 6):  # row i's start is row i - 2: its recorded loss is that row's
        prev = got[extra[i]["start"]["row"]]
        assert extra[i]["start"]["row"] == i - 2 and extra[i]["start"]["test_loss"] == pytest.approx(
            prev["test_loss"], rel=1e-5
        )
    again = tmp_path / "init"
    seed = upd.unseen_seeds(upd.training_seeds(zoo), 1)[0]
    argv = ["sample", str(pairs_model), "--out", str(again), "--num", "1", "--steps", "2", "--progress", "false",
            "--start-init", str(seed)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    (row,) = store.read_zoo(again).to_pylist()
    assert json.loads(row["extra"])["start"]["ref"] == f"init:{seed}"


def test_sample_draws_a_pairs_update_in_one_trailing_step_unless_told(
    pairs_model, zoo, rows, tmp_path, capsys
):
    start = f"{zoo}:{rows[0]['member_id']}@10"
    base = ["sample", str(pairs_model), "--num", "2", "--progress", "false", "--start", start,
            "--conditions", json.dumps({"test_loss": rows[0]["test_loss"]})]  # fmt: skip
    told = {"default": [], "trailing 1": ["--steps", "1", "--timestep_spacing", "trailing"],
            "leading 1": ["--steps", "1", "--timestep_spacing", "leading"]}  # fmt: skip
    spec = {}
    for name, flags in told.items():
        assert main([*base, "--out", str(tmp_path / name), *flags]) == 0, capsys.readouterr().err
        spec[name] = json.loads((tmp_path / name / store.SPEC).read_text())
    assert spec["default"] == spec["trailing 1"]  # the same generation, drawn as recorded
    (drawn,) = spec["default"]["spec"].values()
    assert (drawn["steps"], drawn["timestep_spacing"]) == (1, "trailing")
    assert spec["leading 1"]["spec_hash"] != spec["default"]["spec_hash"]
    # another spacing into the default's folder is another generation, not "already there"
    assert main([*base, "--out", str(tmp_path / "default"), *told["leading 1"]]) == 2
    assert "holds another zoo or generation" in capsys.readouterr().err


# name -> (flags, the error's text)
BAD = {
    "unreadable start": (["--start", "nonsense"], "start: cannot read 'nonsense'"),
    "start member unknown": (["--start", "{zoo}:tiny-nope"], "start: no member 'tiny-nope'"),
    "start step unknown": (["--start", "{zoo}:{member}@7"], "start: member '{member}' has no snapshot at step 7"),
    "start and start_init": (["--start", "{zoo}:{member}", "--start_init", "5"], "start_init: give --start or --start_init, not both"),
    "start_init of a training member": (["--start_init", "{seed}"], "start_init: seed {seed} is training member"),
    "updates without a start": (["--updates", "2"], "updates: needs a pairs model and a start"),
    "measured start condition given": (["--start", "{zoo}:{member}", "--conditions", '{{"start_test_loss": 1.0}}'], "conditions.start_test_loss: is measured on the start"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_start_at_the_cli_is_exit_2_naming_the_field(pairs_model, zoo, rows, tmp_path, capsys, name):
    flags, needle = BAD[name]
    fill = {"zoo": zoo, "member": rows[0]["member_id"], "seed": rows[0]["seed"]}
    out = tmp_path / "o"
    argv = [
        "sample",
        str(pairs_model),
        "--out",
        str(out),
        "--num",
        "1",
        "--steps",
        "1",
        "--progress",
        "false",
    ]
    assert main(argv + [f.format(**fill) for f in flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle.format(**fill) in err, err
    assert not out.exists()


# ---------------------------------------------------------------------------- an overfit pairs model
@pytest.mark.slow  # trains 600 steps
def test_an_overfit_pairs_model_maps_starts_to_their_ends(zoo, rows, digits):
    """Three runs, pairs (init -> final) and (step 10 -> final): one update from each start lands
    nearer its own end than the start was (within 35% of the start's distance), and nearer its own
    end than any other run's end."""
    torch.manual_seed(0)
    runs = sorted({r["member_id"] for r in rows})[:3]
    by = {(r["member_id"], r["step"]): r for r in rows}
    final = {m: max(s for (mm, s) in by if mm == m) for m in runs}
    pairs = [(by[(m, s)], by[(m, final[m])]) for m in runs for s in (0, 10)]
    members = {r["member_id"] + str(r["step"]): MemberTensors.from_row(r) for p in pairs for r in p}
    tok = NeuronTokenizer().fit(list(members.values()))
    enc = {k: tok.normalize(*tok.tokenize(m)) for k, m in members.items()}
    key = lambda r: r["member_id"] + str(r["step"])  # noqa: E731
    layout = tok.tokenize(next(iter(members.values())))[1]
    cond = {
        "test_loss": torch.tensor([e["test_loss"] for _, e in pairs], dtype=torch.float32),
        "start_test_loss": torch.tensor([s["test_loss"] for s, _ in pairs], dtype=torch.float32),
    }
    specs = {n: {"kind": "continuous", "min": v.min().item(), "max": v.max().item()} for n, v in cond.items()}
    x0 = torch.stack([enc[key(e)] for _, e in pairs])  # (6, T, D)
    ctx = torch.stack([enc[key(s)] for s, _ in pairs])
    net = Denoiser(x0.shape[2], x0.shape[1], len(layout["segments"]), width=64, depth=1, heads=2,
                   conditions=specs, context_dim=x0.shape[2], context_skip=True)  # fmt: skip
    system = DiffusionSystem(net, prediction_type="sample", lr=5e-3, ema_decay=0.9, cond_drop_prob=0.0)
    batch = {"tokens": x0, "start_tokens": ctx, "token_valid": torch.ones(x0.shape[:2], dtype=torch.bool),
             "layer_ids": tok.layer_ids(layout).expand(len(pairs), -1), "cond": cond}  # fmt: skip
    fit(system, batch, 600)
    meta = {"mode": "pairs", "conditions": specs, "architecture": "mlp", "target": "weights",
            "arch_config": members[key(pairs[0][0])].arch_config, "normalized": True}  # fmt: skip
    starts = [upd.Start(MemberTensors.from_row(s), key(s)) for s, _ in pairs]
    prompt = {"test_loss": cond["test_loss"].tolist()}
    out = upd.update_chain((system.ema.module, system.scheduler, tok, meta), starts, prompt, len(pairs), 1, digits,
                           SampleOptions(steps=20))  # fmt: skip
    ends = torch.stack([flat(MemberTensors.from_row(e)) for _, e in pairs])  # (6, P)
    for i, ((s, e), m) in enumerate(zip(pairs, out)):
        got = flat(m)
        gap = torch.linalg.vector_norm(ends[i] - flat(MemberTensors.from_row(s)))
        assert torch.linalg.vector_norm(got - ends[i]) < 0.35 * gap
        others = [j for j in range(len(pairs)) if pairs[j][1]["member_id"] != e["member_id"]]
        assert (
            torch.linalg.vector_norm(got - ends[i])
            < torch.linalg.vector_norm(got - ends[others], dim=1).min()
        )
