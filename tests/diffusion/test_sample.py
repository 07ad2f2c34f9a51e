"""Sampling a weights model end to end: a tiny model trained through DiffusionSystem, exact
constraints, seeds, guidance, one-line CLI errors, and generated zoos read back like trained ones
(mask models: tests/masks/test_sample.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from mole.cli import main
from mole.conditions import TERNARY_BITS
from mole.data import load_task
from mole.diffusion import generated
from mole.diffusion.generated import STEPS_RECORD, choose_steps, evaluate, generate_zoo, recipe_steps
from mole.diffusion.model_dir import load_model
from mole.diffusion.options import SPACINGS, SampleOptions
from mole.diffusion.prompts import encode_prompts, fill_constants, guided, parse_conditions
from mole.diffusion.sample import guidance_at, sample, sample_weights
from mole.errors import ConfigError
from mole.eval.base import load_rows, prompt_of
from mole.tokenizer import MemberTensors
from mole.zoo import pruning, store
from mole.zoo.build import build_zoo
from mole.zoo.export import module_from_row
from mole.zoo.quant import dequantize_params
from mole.zoo.spec import ZooSpec
from tests.conftest import TINY_ZOO
from tests.diffusion.helpers import mixed_zoos, train_mixed, train_tiny

VARIANTS = [
    "dense",
    {"name": "magnitude", "options": {"sparsity": 0.5}},
    {"name": "quantized", "options": {"bits": [4, "ternary"]}},
    {"name": "lowrank", "options": {"rank": [4]}},
]


def train_model(zoo, out, steps: int = 12):
    """A tiny model trained through the training side's API and exported as a model folder."""
    return train_tiny(zoo, out, steps)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample-zoo") / "zoo"
    build_zoo(
        ZooSpec.from_dict({**TINY_ZOO, "name": "tiny-mixed", "variants": VARIANTS}), out, progress=False
    )
    return out


@pytest.fixture(scope="module")
def model(zoo, tmp_path_factory):
    return train_model(zoo, tmp_path_factory.mktemp("weights-model"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- sampling
def test_same_seed_same_networks_other_seed_differs(model):
    prompt = {"test_acc": [0.3, 0.5, 0.7], "variant": "dense"}
    options = SampleOptions(steps=4, guidance=2.0, seed=7, batch_size=2)
    a = sample(model, prompt, num=3, options=options)
    b = sample(model, prompt, num=3, options=options)
    c = sample(model, prompt, num=3, options=replace(options, seed=8))
    d = sample(model, prompt, num=3, options=replace(options, batch_size=3))
    assert all(x.equal(y) for x, y in zip(a, b))
    for x, y in zip(a, d):  # network i's noise does not depend on the batch size (the float sums may)
        assert all(torch.allclose(x.params[n], y.params[n], atol=1e-4) for n in x.params)
    assert not any(x.equal(y) for x, y in zip(a, c))
    assert [m.extra["prompt"]["test_acc"] for m in a] == [0.3, 0.5, 0.7] and a[0].present() == []
    assert a[0].extra["prompt"]["task"] == "digits"  # a single-valued condition is filled in


def test_temperature_zero_gives_one_network_per_prompt(model):
    prompt = {"test_acc": 0.5, "variant": "dense"}
    cold = sample(model, prompt, num=3, options=SampleOptions(steps=4, seed=1, temperature=0.0))
    for other in cold[1:]:  # the same net up to float rounding: a batched matmul may round rows apart
        assert all(
            torch.allclose(cold[0].params[n], other.params[n], rtol=1e-5, atol=1e-6) for n in other.params
        )
    warm = sample(model, prompt, num=2, options=SampleOptions(steps=4, seed=1, temperature=0.5))
    assert not warm[0].equal(warm[1])


@pytest.mark.parametrize("bits,q", [(4, 7), ("ternary", 1)])
def test_quantized_sampling_lands_on_the_grid(model, bits, q):
    for m in sample(model, {"variant": "quantized", "bits": bits}, num=3, options=SampleOptions(steps=3)):
        arch = m.arch
        codes = torch.cat([m.codes[w].flatten() for w in arch.weight_names()])
        scales = torch.cat([m.scales[w] for w in arch.weight_names()])
        back = dequantize_params(arch, codes, scales, m.params)
        for w in arch.weight_names():  # code * scale == params, bitwise; codes inside the grid
            assert torch.equal(back[w].view(torch.int32), m.params[w].view(torch.int32))
        assert codes.abs().max() <= q


def test_sparse_and_low_rank_sampling(model):
    three = SampleOptions(steps=3)
    for m in sample(model, {"variant": "magnitude", "sparsity": 0.5}, num=2, options=three):
        n = sum(m.mask[w].numel() for w in m.arch.weight_names())
        assert sum((~m.mask[w]).sum().item() for w in m.arch.weight_names()) == round(0.5 * n)
    for m in sample(model, {"variant": "lowrank", "rank": 4}, num=2, options=three):
        for w in m.arch.weight_names():
            assert torch.linalg.matrix_rank(m.params[w].double(), rtol=1e-5) <= 4


def test_structure_channels_reach_the_written_member(model):
    """A model trained on sparse and quantized rows generates masks and codes: a net prompted with a
    sparsity and bits keeps the top-k of its own mask channel and its own codes, snapped onto the grid;
    the default makes the same draw exact from its weights (magnitude top-k, quantized weights)."""
    net, scheduler, tok, meta = load_model(model)
    assert {"mask", "codes"} <= set(tok.fields)
    prompt = {"variant": "magnitude", "sparsity": 0.5, "bits": 4}
    options = SampleOptions(steps=3, seed=2)
    per_net = [dict(prompt) for _ in range(2)]
    fill_constants(meta, per_net)
    cond = encode_prompts(meta, per_net)
    draws, channels = sample_weights(
        net, scheduler, tok, meta, cond, 2, options, None, lambda n: None, [["mask", "codes"]] * 2
    )
    read = sample(model, prompt, num=2, options=replace(options, channels=True))
    by_weights = sample(model, prompt, num=2, options=options)
    for draw, ch, a, b in zip(draws, channels, read, by_weights):
        names = a.arch.weight_names()
        assert a.extra["structure"] == {"sparsity": "channel", "bits": "channel"}
        assert b.extra["structure"] == {"sparsity": "weights", "bits": "weights"}
        scores = {n: ch["mask"][n][None] for n in names}
        top = pruning.masks_from_scores(scores, 0.5, "global")
        assert all(torch.equal(a.mask[n], top[n][0]) for n in names)  # the channel's top-k, exactly 50%
        for n in names:  # its own codes, rounded into the 4-bit grid, zero where removed
            want = torch.clamp(torch.round(ch["codes"][n]), -7, 7) * a.mask[n]
            assert torch.equal(a.codes[n], want.to(torch.int8))
            assert torch.equal(a.scales[n], ch["scales"][n].abs())
        by_size = pruning.masks_from_scores({n: draw.params[n].abs()[None] for n in names}, 0.5, "global")
        assert all(torch.equal(b.mask[n], by_size[n][0]) for n in names)  # the same draw, by magnitude
        assert not all(torch.equal(a.mask[n], b.mask[n]) for n in names)


def test_factor_channels_reach_the_written_member(model):
    """Told a rank, a model whose tokens carry low-rank factors is drawn with that rank's V factor
    tokens after its neuron tokens (as its training rows held them) and, reading channels, writes
    its own generated factors: every linear weight is their product U V, not the truncated SVD of
    its weights, which the default still takes."""
    net, scheduler, tok, meta = load_model(model)
    assert "factors" in tok.fields
    prompt = {"variant": "lowrank", "rank": 4}
    options = SampleOptions(steps=3, seed=2)
    per_net = [dict(prompt) for _ in range(2)]
    fill_constants(meta, per_net)
    cond = encode_prompts(meta, per_net)
    _, channels = sample_weights(
        net, scheduler, tok, meta, cond, 2, options, None, lambda n: None, [["factors"]] * 2, None, [4, 4]
    )
    read = sample(model, prompt, num=2, options=replace(options, channels=True))
    by_weights = sample(model, prompt, num=2, options=options)
    for ch, a, b in zip(channels, read, by_weights):
        assert a.extra["structure"] == {"rank": "channel"} and b.extra["structure"] == {"rank": "weights"}
        shapes = a.factor_shapes()
        assert [n for n, _ in shapes] == list(ch["factors"]) and all(
            list(ch["factors"][n].shape) == dims for n, dims in shapes
        )
        assert all(torch.equal(a.factors[n], ch["factors"][n]) for n, _ in shapes)  # its own factors
        for w in a.arch.weight_names():
            u, v = ch["factors"][f"{w}.U"], ch["factors"][f"{w}.V"]
            torch.testing.assert_close(a.params[w], u @ v)
            assert torch.linalg.matrix_rank(b.params[w].double(), rtol=1e-5) <= 4
        assert not torch.equal(a.params[a.arch.weight_names()[0]], b.params[b.arch.weight_names()[0]])
    per_net = {"variant": ["lowrank", "dense"], "rank": [4, 0]}
    mixed = sample(model, per_net, num=2, options=replace(options, channels=True))
    assert mixed[0].factors is not None and mixed[1].factors is None  # one batch, two token counts


def test_channels_refused_where_the_model_has_none(model):
    net, scheduler, tok, meta = load_model(model)
    tok.fields = [f for f in tok.fields if f != "mask"]  # as a model whose tokens carry no mask bits
    with pytest.raises(ConfigError, match="^channels: the model generates no channel for sparsity "):
        sample(
            model,
            {"variant": "magnitude", "sparsity": 0.5},
            num=1,
            options=SampleOptions(steps=1, channels=True),
            model=(net, scheduler, tok, meta),
        )
    dense = sample(model, {"variant": "dense"}, 1, SampleOptions(steps=1, channels=True))  # the real model
    assert "structure" not in dense[0].extra  # no level asked: nothing to read from a channel


def test_projecting_without_conditioning(model, tmp_path, capsys):
    """`project`: a level the nets are projected onto but the model is not told (as for a dense-only
    model): the same draw as without it, then exact global magnitude top-k."""
    prompt = {"test_acc": 0.7, "variant": "dense"}
    options = SampleOptions(steps=3, seed=5)
    plain = sample(model, prompt, num=2, options=options)
    pruned = sample(model, prompt, num=2, options=options, project={"sparsity": 0.8})
    for a, b in zip(plain, pruned):
        names = a.arch.weight_names()
        n = sum(a.params[w].numel() for w in names)
        assert sum((~b.mask[w]).sum().item() for w in names) == round(0.8 * n)
        kept = torch.cat([a.params[w][b.mask[w]].abs() for w in names])
        dropped = torch.cat([a.params[w][~b.mask[w]].abs() for w in names])
        assert kept.min() >= dropped.max()  # the largest magnitudes of the very same draw
        assert all(torch.equal(b.params[w], a.params[w] * b.mask[w]) for w in names)
        assert b.extra["project"] == {"sparsity": 0.8} and "sparsity" not in b.extra["prompt"]
    with pytest.raises(ConfigError, match="^project.test_acc: cannot be projected onto"):
        sample(model, prompt, num=1, options=options, project={"test_acc": 0.5})
    with pytest.raises(ConfigError, match="^project.sparsity: 3 values for 1 networks"):
        sample(model, prompt, num=1, options=options, project={"sparsity": [0.5, 0.8, 0.9]})
    with pytest.raises(ConfigError, match="^project.sparsity: also given as a condition"):
        sample(model, {**prompt, "sparsity": 0.5}, num=1, options=options, project={"sparsity": 0.8})
    out = tmp_path / "gen"
    code, _, _ = run(capsys, "sample", model, "--conditions", '{"test_acc": 0.7, "variant": "dense"}',
                     "--num", 2, "--steps", 3, "--project.sparsity", 0.8, "--out", out, "--progress", "false")  # fmt: skip
    rows = store.read_zoo(out).to_pylist()
    assert code == 0 and [r["sparsity"] for r in rows] == pytest.approx([0.8, 0.8], abs=1e-3)
    assert json.loads(rows[0]["variant_config"])["sparsity"] == 0.8
    assert prompt_of(rows[0])["sparsity"] == 0.8  # evaluators read the level it was made to meet


def test_oracle_denoiser_regenerates_its_member(model, zoo):
    """A stand-in that always predicts one member's clean tokens (x0, as the model's prediction type
    says) must come out of the DDIM loop, denormalisation and detokenization as that member."""
    denoiser, scheduler, tok, meta = load_model(model)
    row = next(r for r in store.read_zoo(zoo).to_pylist() if r["final"] and r["variant"] == "dense")
    member = MemberTensors.from_row(row)
    raw, layout = tok.tokenize(member)
    target = tok.normalize(raw, layout)  # (T, D)

    class Oracle:
        config = denoiser.config

        def __call__(self, x, t, cond, layer_ids, token_valid, context):
            assert x.shape[1:] == target.shape and t.shape == (x.shape[0],)
            return target.expand_as(x)

    assert scheduler.config.prediction_type == "sample"
    options = SampleOptions(steps=5)
    (out,) = sample(
        model, {"variant": "dense"}, num=1, options=options, model=(Oracle(), scheduler, tok, meta)
    )
    for n, p in member.params.items():
        assert torch.allclose(out.params[n], p, atol=1e-5), n


def test_guidance_is_uncond_plus_g_times_the_difference():
    calls = []

    def predict(cond):  # a stand-in for the model with everything but the conditions bound
        calls.append(dict(cond))
        shift = cond["test_acc"][:, None, None] if "test_acc" in cond else 0.0
        return torch.zeros(2, 3, 4) + 1.0 + shift  # (B, T, D)

    cond = {"test_acc": torch.tensor([0.5, 0.25])}
    out = guided(predict, cond, 3.0)
    assert torch.equal(out[:, 0, 0], torch.tensor([2.5, 1.75])) and calls[1] == {}  # 1 + 3 * shift
    calls.clear()
    assert torch.equal(guided(predict, cond, 1.0), predict(cond)) and len(calls) == 2  # one pass at g = 1
    calls.clear()
    assert torch.equal(guided(predict, {}, 3.0), torch.ones(2, 3, 4)) and len(calls) == 1  # nothing to guide
    calls.clear()
    told = {**cond, "architecture": torch.tensor([1, 1])}
    guided(
        predict, told, 3.0, keep=["architecture", "task"]
    )  # a mixed model's: uncond keeps the architecture
    assert calls[1] == {"architecture": told["architecture"]}


def test_guidance_interval_guides_only_inside_it(model):
    assert SampleOptions(guidance_interval=[500, 999]).guidance_interval == (500, 999)  # a YAML list
    options = SampleOptions(steps=4, guidance=4.0, guidance_interval=(500, 999))
    assert [guidance_at(options, t) for t in (999, 500, 499, 0)] == [4.0, 4.0, 1.0, 1.0]
    assert guidance_at(replace(options, guidance_interval=None), 0) == 4.0
    prompt = {"test_acc": [0.3, 0.7], "variant": "dense"}

    def draw(**kw):
        return sample(model, prompt, num=2, options=replace(options, **kw))

    everywhere, nowhere = draw(guidance_interval=(0, 999)), draw(guidance_interval=(1000, 1000))
    assert all(x.equal(y) for x, y in zip(everywhere, draw(guidance_interval=None)))
    assert all(x.equal(y) for x, y in zip(nowhere, draw(guidance=1.0, guidance_interval=None)))
    assert not any(x.equal(y) for x, y in zip(draw(), everywhere))  # partly guided: neither of them


def test_timestep_spacing_places_the_first_call(model):
    """Five leading steps first call the denoiser at t=800 (pure noise read as if it held signal);
    trailing ones at t=999, the last training timestep; the option reaches the sampler."""
    loaded = load_model(model)
    seen = []

    class Spy:  # the denoiser, recording each call's timestep
        config = loaded.net.config

        def __call__(self, x, t, *args, **kw):
            seen.append(int(t[0]))
            return loaded.net(x, t, *args, **kw)

    prompt = {"test_acc": [0.3, 0.7], "variant": "dense"}
    for spacing, steps in (("leading", [800, 600, 400, 200, 0]), ("trailing", [999, 799, 599, 399, 199])):
        seen.clear()
        options = SampleOptions(steps=5, guidance=1.0, timestep_spacing=spacing)
        sample(model, prompt, num=2, options=options, model=(Spy(), *loaded[1:]))
        assert seen == steps
    assert (
        SampleOptions().resolved().timestep_spacing == "leading"
    )  # a weights model draws as before, bit for bit
    one = [sample(model, prompt, num=2, options=SampleOptions(steps=1, timestep_spacing=s)) for s in SPACINGS]
    assert not one[0][0].equal(one[1][0])  # one step: t=0 (leading) and t=999 (trailing) differ


def test_parse_conditions():
    assert parse_conditions('{"test_acc": 0.9, "variant": "dense"}') == {"test_acc": 0.9, "variant": "dense"}
    assert parse_conditions("test_acc=0.9, variant=dense bits=ternary test_loss=[1,2]") == {
        "test_acc": 0.9,
        "variant": "dense",
        "bits": "ternary",
        "test_loss": [1, 2],
    }


# ---------------------------------------------------------------------------- the command
@pytest.mark.parametrize(
    "conditions,message",
    [
        ('{"accuracy": 0.9}', "conditions.accuracy: unknown condition; valid: "),
        ('{"test_acc": 1.5}', "conditions.test_acc: 1.5 is outside the trained range ["),
        (
            '{"variant": "imp"}',
            "conditions.variant: unknown value 'imp'; valid: dense, lowrank, magnitude, quantized",
        ),
        ('{"bits": 1}', "conditions.bits: 1 is outside the trained range [1.585, 32]"),
        ('{"bits": 5}', "conditions.bits: unsupported bit-width 5; valid: 8, 4, 2, ternary, 32 (float)"),
        ('{"rank": 3, "sparsity": 0.5}', "conditions.rank: cannot be combined with sparsity or bits"),
        ('{"test_acc": ', "conditions: Expected a <class 'dict'>"),
    ],
)
def test_bad_conditions_are_one_line_errors(model, tmp_path, capsys, conditions, message):
    code, out, err = run(capsys, "sample", model, "--conditions", conditions, "--out", tmp_path / "gen")
    assert code == 2 and err.startswith(f"mole: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "gen").exists()


def test_extrapolation_needs_the_opt_in(model, tmp_path, capsys):
    prompt = ["--conditions", '{"test_acc": 1.0, "variant": "dense"}', "--num", 2, "--steps", 2]
    code, _, err = run(capsys, "sample", model, *prompt, "--out", tmp_path / "no", "--progress", "false")
    assert code == 2 and err.endswith("(past the zoo's best: opt in with --extrapolate true)\n"), err
    assert not (tmp_path / "no").exists()
    args = [*prompt, "--extrapolate", "true", "--out", tmp_path / "yes", "--progress", "false"]
    code, _, err = run(capsys, "sample", model, *args)
    rows = store.read_zoo(tmp_path / "yes").to_pylist()
    assert code == 0 and [json.loads(r["variant_config"])["test_acc"] for r in rows] == [1.0, 1.0]
    assert all(json.loads(r["variant_config"])["extrapolate"] for r in rows)  # the opt-in is recorded


def test_missing_model_folder_is_one_line_error(tmp_path, capsys):
    code, _, err = run(capsys, "sample", tmp_path / "nope", "--out", tmp_path / "gen")
    assert code == 2 and err.count("\n") == 1 and "not a mole model folder" in err
    assert not (tmp_path / "gen").exists()


def test_generated_zoo_reads_back_like_a_trained_one(model, tmp_path, capsys):
    out = tmp_path / "gen"
    args = ["sample", model, "--conditions.test_acc", 0.7, "--conditions.variant", "magnitude"]
    args += ["--conditions.sparsity", 0.5, "--num", 4]
    args += ["--steps", 3, "--seed", 1, "--out", out, "--progress", "false"]
    code, stdout, _ = run(capsys, *args)
    assert code == 0 and f"sampled 4 network(s) -> {out}" in stdout
    rows = store.read_zoo(out).to_pylist()
    assert [r["variant"] for r in rows] == ["generated"] * 4 and len({r["member_id"] for r in rows}) == 4
    config = json.loads(rows[0]["variant_config"])
    assert config == {  # the prompt, the conditions the model knows one value of, the run
        "test_acc": 0.7,
        "variant": "magnitude",
        "sparsity": 0.5,
        "architecture": "mlp",
        "task": "digits",
        "guidance": 1.0,
        "steps": 3,
        "seed": 1,
    }
    digits = None
    shares = {json.loads(r["extra"])["sampling_seconds"] for r in rows}  # each net's share of the run
    assert len(shares) == 1 and 0 < shares.pop() < 60
    for r in rows:
        assert r["sparsity"] == 0.5 and MemberTensors.from_row(r).mask is not None
        net = module_from_row(r).eval()
        if digits is None:
            from mole.data import load_task

            digits = load_task(r["task"], **json.loads(r["task_options"]))
        with torch.no_grad():
            acc = (net(digits.x_test).argmax(1) == digits.y_test).double().mean().item()
        assert acc == r["test_acc"]
    code, stdout, _ = run(capsys, "zoo", "info", out, "--json")
    assert code == 0 and json.loads(stdout)["variants"]["generated"]["members"] == 4
    code, stdout, _ = run(capsys, *args)  # the same command again: nothing to do
    assert code == 0 and "already there" in stdout
    code, _, err = run(capsys, *args[:-4], "--seed", 2, "--out", out)
    assert code == 2 and "holds another zoo or generation" in err


def test_another_spacing_is_another_generation(model, tmp_path):
    """A generated zoo's description names its spacing and guidance interval, so rerunning a recipe
    with another spacing draws anew instead of reading back the old draws as if they were its own."""
    prompt = {"test_acc": 0.6, "variant": "dense"}
    out = tmp_path / "gen"
    _, sampled = generate_zoo(model, out, prompt, 2, SampleOptions(steps=2))
    assert sampled and "timestep_spacing" not in json.loads((out / store.SPEC).read_text())["spec"]
    for other in (
        SampleOptions(steps=2, timestep_spacing="trailing"),
        SampleOptions(steps=2, guidance_interval=(0, 500)),
    ):
        with pytest.raises(store.StoreError, match="holds another zoo or generation"):
            generate_zoo(model, out, prompt, 2, other)
    assert generate_zoo(model, out, prompt, 2, SampleOptions(steps=2)) == (out, False)  # the same: kept
    # each net records where its steps lay, as the matrix row reads it
    trailing, _ = generate_zoo(
        model, tmp_path / "t", prompt, 2, SampleOptions(steps=2, timestep_spacing="trailing")
    )
    assert [json.loads(r["extra"])["timestep_spacing"] for r in load_rows(trailing, tensors=False)] == [
        "trailing"
    ] * 2
    assert all("timestep_spacing" not in json.loads(r["extra"]) for r in load_rows(out, tensors=False))


# ---------------------------------------------------------------------------- steps chosen on validation
def test_steps_chosen_by_how_close_their_draws_come_to_their_prompts_on_validation(
    model, tmp_path, monkeypatch
):
    prompt = {"test_acc": [0.3, 0.5, 0.7], "variant": "dense"}
    options = SampleOptions(guidance=2.0, seed=3, timestep_spacing="trailing")
    record = tmp_path / "steps.json"
    steps, by = choose_steps(model, prompt, 3, options, [1, 3], record)
    digits = load_task("digits")
    for i, c in enumerate((1, 3)):  # each candidate's figures are its own draws' on validation
        val = evaluate(sample(model, prompt, 3, replace(options, steps=c)), digits)["val_acc"].double()
        assert by["val_acc"][i] == pytest.approx(float(val.mean()))
        assert by["val_error"][i] == pytest.approx(float((val - torch.tensor([0.3, 0.5, 0.7])).abs().mean()))
    kept = json.loads(record.read_text())
    assert (
        steps in (1, 3) and kept["candidate"] == steps and [1, 3][kept["chosen"]] == steps
    )  # the rule: below

    calls = []
    monkeypatch.setattr(generated, "sample", lambda *a, **k: calls.append(a) or [])
    assert choose_steps(model, prompt, 3, options, [1, 3], record) == (steps, by)  # read back, not drawn
    assert calls == []

    monkeypatch.undo()
    # per-net validation accuracies by step count, for prompts 0.9 / 0.8 / 1.0 / 0.7; the first
    # candidate is kept unless clearly beaten
    accs = {
        5: [0.8, 0.7, 0.9, 0.6],  # 0.1 under every prompt
        1: [0.81, 0.7, 0.9, 0.61],
        2: [0.9, 0.8, 1.0, 0.7],  # on every prompt
        3: [0.9, 0.65, 1.0, 0.55],  # closer on average, but all over the place
        4: [1.0, 1.0, 1.0, 1.0],  # more accurate everywhere, further from what was asked
    }
    fake = lambda nets, data: {"val_acc": torch.tensor(accs[nets[0]], dtype=torch.float64)}  # noqa: E731
    monkeypatch.setattr(generated, "evaluate", fake)  # only validation is read: no test split here
    monkeypatch.setattr(generated, "sample", lambda d, c, n, o, **k: [o.steps] * n)
    prompt = {"test_acc": [0.9, 0.8, 1.0, 0.7], "variant": "dense"}
    steps, by = choose_steps(model, prompt, 4, options, [5, 1])
    assert steps == 5 and by == {
        "val_acc": [pytest.approx(0.75), pytest.approx(0.755)],
        "val_error": [pytest.approx(0.1), pytest.approx(0.095)],
    }  # a hair: noise
    assert choose_steps(model, prompt, 4, options, [5, 1, 2])[0] == 2  # 0.1 closer on every net: clearly
    assert choose_steps(model, prompt, 4, options, [5, 3])[0] == 5
    assert choose_steps(model, prompt, 4, options, [5, 4])[0] == 5
    # no accuracy prompted: the more accurate draws win
    steps, by = choose_steps(model, {"variant": "dense"}, 4, options, [5, 4])
    assert steps == 4 and "val_error" not in by


def test_a_candidate_may_name_its_own_spacing(model, monkeypatch, tmp_path):
    """{steps, timestep_spacing} candidates: leading five steps kept unless one trailing step clearly
    wins; each candidate draws at its own spacing, the others at the options' own."""
    accs = {
        (5, "leading"): [0.5, 0.6, 0.7],
        (1, "trailing"): [0.6, 0.7, 0.8],
        (1, "leading"): [0.0, 0.0, 0.0],
    }
    drawn = []

    def fake_sample(d, c, n, o, **k):
        drawn.append((o.steps, o.timestep_spacing))
        return [(o.steps, o.timestep_spacing)] * n

    fake = lambda nets, data: {"val_acc": torch.tensor(accs[nets[0]], dtype=torch.float64)}  # noqa: E731
    monkeypatch.setattr(generated, "evaluate", fake)
    monkeypatch.setattr(generated, "sample", fake_sample)
    prompt = {"test_acc": [0.7, 0.8, 0.9], "variant": "dense"}  # one trailing step: 0.1 closer on each
    trailing_one = {"steps": 1, "timestep_spacing": "trailing"}
    chosen, by = choose_steps(model, prompt, 3, SampleOptions(), [5, trailing_one, 1, 5])
    assert chosen == trailing_one and by["val_acc"] == [pytest.approx(v) for v in (0.6, 0.7, 0.0, 0.6)]
    assert drawn == [(5, "leading"), (1, "trailing"), (1, "leading")]  # the repeated 5 scored once
    weights = {"steps": [5, trailing_one], "guidance": 6.0}
    assert recipe_steps(model, weights, prompt, 3, 1, tmp_path) == {
        "steps": 1, "guidance": 6.0, "timestep_spacing": "trailing"}  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [[], [0, 2], [1.5], 5, [True], [{"timestep_spacing": "trailing"}], [{"steps": 1, "timestep_spacing": "x"}],
     [{"steps": 1, "guidance": 2.0}], [{"steps": 0}]],
)  # fmt: skip
def test_bad_step_candidates_are_one_line_errors(model, bad):
    with pytest.raises(ConfigError, match="steps: candidates must be a non-empty list of step counts"):
        choose_steps(model, {"test_acc": 0.5}, 2, SampleOptions(), bad)


def test_a_recipe_with_a_list_of_steps_draws_at_the_chosen_one(model, tmp_path):
    weights = {"steps": [1, 2], "guidance": 2.0, "timestep_spacing": "trailing"}
    prompt = {"test_acc": [0.5, 0.7], "variant": "dense"}
    chosen = recipe_steps(model, weights, prompt, 2, 1, tmp_path)
    steps, _ = choose_steps(model, prompt, 2, SampleOptions(guidance=2.0, seed=1, timestep_spacing="trailing"),
                            [1, 2], tmp_path / STEPS_RECORD)  # fmt: skip
    assert chosen == {**weights, "steps": steps}
    assert recipe_steps(model, {"steps": 5, "guidance": 6.0}, prompt, 2, 1, tmp_path / "x") == {
        "steps": 5, "guidance": 6.0}  # fmt: skip
    assert not (tmp_path / "x").exists()  # one count: nothing drawn, nothing written


# ---------------------------------------------------------------------------- one model, several cells
@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    return train_mixed(mixed_zoos(tmp_path_factory), tmp_path_factory.mktemp("mixed-model"))


def test_each_seen_cell_samples_nets_of_its_shape(mixed_model, tmp_path):
    meta = load_model(mixed_model).meta
    assert len(meta["cells"]) == 4 and isinstance(meta["zoo"], list) and len(meta["zoo"]) == 3
    fast = SampleOptions(steps=2, seed=3)
    for s in meta["cells"]:
        options = {k: v for k, v in s["arch_config"].items() if k not in ("input_shape", "num_classes")}
        prompt = {"architecture": s["architecture"], "task": s["task"], "variant": s["variants"][0],
                  "arch_options": options}  # fmt: skip
        nets = sample(mixed_model, prompt, 2, fast)
        arch = MemberTensors(s["architecture"], s["arch_config"], {}).arch
        for m in nets:
            assert (m.architecture, m.arch_config) == (s["architecture"], s["arch_config"])
            assert {n: tuple(t.shape) for n, t in m.params.items()} == arch.param_shapes()
            assert m.extra["prompt"]["task"] == s["task"] and "arch_options" not in m.extra["prompt"]
    narrow = sample(
        mixed_model, {"architecture": "mlp", "task": "digits", "variant": "neuron_pruned"}, 1, fast
    )
    assert narrow[0].arch_config["hidden"] == [8]  # neuron_pruned members are the narrower shape
    # one call may mix cells: each net keeps its place, and its draw is the one it gets alone
    mixed = sample(mixed_model, {"architecture": ["cnn", "mlp", "cnn"], "task": ["digits", "mnist1d", "digits"]},
                   3, fast)  # fmt: skip
    assert [m.architecture for m in mixed] == ["cnn", "mlp", "cnn"] and mixed[1].arch_config[
        "input_shape"
    ] == [1, 40]
    alone = sample(mixed_model, {"architecture": "cnn"}, 2, fast)
    assert all(torch.equal(a.params[n], b.params[n]) for a, b in zip(alone, mixed[::2]) for n in a.params)
    out = tmp_path / "gen"  # a generated zoo of one cell, evaluated on its own task
    generate_zoo(mixed_model, out, {"task": "mnist1d", "test_acc": 0.2}, 2, fast)
    rows = store.read_zoo(out).to_pylist()
    assert {r["task"] for r in rows} == {"mnist1d"} and json.loads(rows[0]["task_options"]) == {
        "num_samples": 500
    }


@pytest.mark.parametrize(
    "conditions,message",
    [
        ('{"architecture": "resnet"}', "conditions.architecture: unknown value 'resnet'; valid: cnn, mlp"),
        ('{"task": "cifar10"}', "conditions.task: unknown value 'cifar10'; valid: digits, mnist1d"),
        ('{"architecture": "cnn", "task": "mnist1d"}',
         'conditions: the model never trained on a network of architecture="cnn", task="mnist1d"; it saw cnn'),
        ('{"architecture": "mlp", "task": "digits"}',
         'conditions: 2 shapes fit architecture="mlp", task="digits": prompt one by architecture, task, variant or '
         'arch_options: mlp {"hidden": [16]} on digits (dense); mlp {"hidden": [8]} on digits (neuron_pruned)'),
        ('{"architecture": ["cnn", "mlp"], "task": ["digits", "mnist1d"]}',
         "conditions: a generated zoo holds one architecture and task, these prompts pick 2"),
    ],
)  # fmt: skip
def test_unknown_unseen_or_ambiguous_cells_are_one_line_errors(
    mixed_model, tmp_path, capsys, conditions, message
):
    code, _, err = run(
        capsys, "sample", mixed_model, "--conditions", conditions, "--num", 2, "--out", tmp_path / "g"
    )
    assert code == 2 and err.startswith(f"mole: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "g").exists()


def test_a_ternary_prompt_is_the_bits_its_model_was_trained_with():
    """ "ternary" is log2(3) bits for a model whose ternary rows were conditioned so (its range reaches
    it), and 2 bits for one trained when ternary rows were conditioned as their 2-bit codes."""

    def meta(low):
        return {"conditions": {"bits": {"kind": "continuous", "min": low, "max": 32}}}

    new = encode_prompts(meta(TERNARY_BITS), [{"bits": "ternary"}, {"bits": 2}])
    assert new["bits"].tolist() == pytest.approx([TERNARY_BITS, 2.0])
    old = encode_prompts(meta(2), [{"bits": "ternary"}])
    assert old["bits"].tolist() == [2.0]
