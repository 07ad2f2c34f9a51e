"""The MaskRefiner (a learned correction of the construction) and its training across inits."""

from __future__ import annotations

import pytest
import torch

from mole.errors import ConfigError
from mole.masks.across_inits import (
    STREAMS,
    RefinerTraining,
    construction_scores,
    draw,
    evaluate,
    init_seeds,
    teacher_masks,
    train_refiner,
)
from mole.masks.construction import least_squares_masks, least_squares_scores, prior_data, standardized
from mole.masks.refiner import (
    CONTEXT,
    FAMILIES,
    FEATURES,
    GRADIENT,
    MaskProblem,
    MaskRefiner,
    features,
    mask_gradients,
    mask_logits,
    refine,
    refinements,
    std_of,
)
from mole.nets import build_architecture
from mole.zoo.pruning import masks_from_scores, topk_straight_through
from mole.zoo.variants.supermask import frozen_init

ARCHS = {"mlp": {"hidden": [16, 12]}, "cnn": {"channels": [4, 6], "hidden": [12]}}


def nudged(model: MaskRefiner, seed: int = 0) -> MaskRefiner:
    """The model with random, clearly nonzero output layers (a trained model's stand-in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in [model.mlp, *model.kept]:
            net[-1].weight.copy_(torch.randn(net[-1].weight.shape, generator=g))
            net[-1].bias.fill_(0.3)
    return model


def inits_and_scores(name: str, digits, seeds: list[int], dist: str, sparsity: list[float], inputs: int):
    """(arch, init, x, y, sparsity, construction scores) of frozen inits of one of ARCHS."""
    arch = build_architecture(name, digits.input_shape, 10, **ARCHS[name])
    init = frozen_init(arch, seeds, dist)
    x, y = prior_data(digits, inputs)
    sparsity = torch.tensor(sparsity)
    return arch, init, x, y, sparsity, least_squares_scores(arch, init, x, y, sparsity)


@pytest.mark.parametrize("name", list(ARCHS))
def test_zero_correction_is_the_construction_exactly(name, digits):
    arch, init, x, y, sparsity, scores = inits_and_scores(
        name, digits, [5, 6, 7], "normal", [0.5, 0.8, 0.9], 256
    )
    for training in (False, True):  # each net's kept MLP, or the one being trained
        out = refine(
            MaskRefiner(steps=2, step_size=0), MaskProblem(arch, init, scores, sparsity, x, y), training
        )
        for n, s in standardized(scores).items():
            assert torch.equal(out[n], s)
    same = least_squares_masks(arch, {n: p[:1] for n, p in init.items()}, digits, 0.5, inputs=256)
    first = least_squares_scores(arch, {n: p[:1] for n, p in init.items()}, x, y, sparsity[:1])
    zero = MaskRefiner(steps=2, step_size=0)
    refined = refine(zero, MaskProblem(arch, {n: p[:1] for n, p in init.items()}, first, sparsity[:1], x, y))
    for n, m in masks_from_scores(refined, 0.5, "layerwise").items():
        assert torch.equal(m, same[n])  # the lsq_supermask baseline's masks


@pytest.mark.parametrize("name", list(ARCHS))
def test_an_untrained_refiner_follows_the_mask_gradient_by_its_step_size(name, digits):
    arch, init, x, y, sparsity, scores = inits_and_scores(
        name, digits, [3, 4], "signed_constant", [0.5, 0.8], 128
    )
    s = standardized(scores)
    for out in refinements(
        MaskRefiner(steps=3, step_size=0.25), MaskProblem(arch, init, scores, sparsity, x, y)
    ):
        masks = {n: topk_straight_through(v, sparsity) for n, v in s.items()}
        grads = mask_gradients(arch, init, masks, x, y)
        s = {n: v - 0.25 * grads[n] / std_of(grads[n]) for n, v in s.items()}
        for n, v in out.items():
            torch.testing.assert_close(v, s[n], rtol=0, atol=1e-6)
            assert not torch.equal(v, standardized(scores)[n])  # it moved
    with pytest.raises(ConfigError, match=r"^refiner.step_size: must be >= 0, got -0.1"):
        MaskRefiner(step_size=-0.1)


@pytest.mark.parametrize("name", list(ARCHS))
def test_sparsity_conditioning_is_exact(name, digits):
    arch, init, x, y, sparsity, scores = inits_and_scores(
        name, digits, [1, 2, 3, 4], "kaiming_uniform", [0.5, 0.8, 0.9, 0.8], 128
    )
    model = nudged(MaskRefiner(steps=2))
    problem = MaskProblem(arch, init, scores, sparsity, x, y)
    *_, last = refinements(model, problem)  # the last step, moved for sure
    changed = False
    for out in (last, refine(model, problem)):
        for n, s in out.items():
            m = topk_straight_through(s, sparsity)
            removed = (m == 0).flatten(1).sum(1).tolist()
            assert removed == [round(v * m[0].numel()) for v in sparsity.tolist()]
            changed |= not torch.equal(m, topk_straight_through(scores[n], sparsity))
    assert changed  # a nonzero correction moves the masks


def test_refine_keeps_each_nets_most_accurate_step_on_the_training_examples(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16, 12])
    init = frozen_init(arch, [8, 9, 10, 11], "normal")
    x, y = prior_data(digits, 256)
    sparsity = torch.tensor([0.5, 0.8, 0.9, 0.5])
    scores = least_squares_scores(arch, init, x, y, sparsity)
    model = nudged(MaskRefiner(steps=3), seed=1)
    problem = MaskProblem(arch, init, scores, sparsity, x, y)
    steps = [standardized(scores), *refinements(model, problem)]
    accs = torch.stack([problem.accuracy(s) for s in steps])  # (T + 1, B)
    out = refine(model, problem)
    for b, t in enumerate(accs.argmax(0).tolist()):  # the first of the most accurate
        assert all(torch.equal(out[n][b], steps[t][n][b]) for n in out)
    assert (problem.accuracy(out) >= accs[0]).all()


def test_features_are_per_weight_and_read_the_sparsity(digits):
    arch, init, x, y, sparsity, scores = inits_and_scores(
        "cnn", digits, [1, 2], "signed_constant", [0.5, 0.9], 64
    )
    z = standardized(scores)
    f = features(arch, init, z, z, sparsity, x, y, 0.0)
    for n, v in f.items():
        assert v.shape == (*init[n].shape, FEATURES)
        assert v[0, ..., 6].unique().tolist() == [0.5] and v[1, ..., 6].unique().tolist() == [
            pytest.approx(0.9)
        ]
        assert torch.equal(v[..., 2] > 0, topk_straight_through(z[n], sparsity) > 0)  # the kept bit


def test_each_net_gets_the_kept_mlp_of_its_level_and_init_family(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[32])
    model = MaskRefiner()  # levels 0.5, 0.8, 0.9 x families signed_constant, normal, kaiming_uniform
    init = {
        n: torch.cat([frozen_init(arch, [i], f)[n] for i, f in enumerate(FAMILIES)])
        for n in arch.param_shapes()
    }
    assert model.condition(init, torch.tensor([0.5, 0.8, 0.9])).tolist() == [0, 4, 8]
    assert model.condition(init, torch.tensor([0.84, 0.6, 0.99])).tolist() == [3, 1, 8]  # nearest level
    with pytest.raises(ConfigError, match=r"^refiner.families: need levels and families"):
        MaskRefiner(families=("orthogonal",))


def test_unseen_inits_are_never_training_inits(digits):
    seeds = {s: set(init_seeds(s, 5000)) for s in STREAMS}
    assert not seeds["train"] & seeds["test"] and not seeds["train"] & seeds["val"]
    assert not seeds["val"] & seeds["test"] and all(len(v) == 5000 for v in seeds.values())
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[8])
    train, test = draw(arch, "train", 12, ["normal"], [0.5]), draw(arch, "test", 12, ["normal"], [0.5])
    assert not set(train.seeds) & set(test.seeds)
    assert not torch.equal(train.init["layers.0.weight"][0], test.init["layers.0.weight"][0])
    with pytest.raises(ConfigError, match=r"^stream: unknown init stream 'eval'"):
        init_seeds("eval", 1)


def test_draw_covers_every_distribution_and_sparsity(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[8])
    d = draw(arch, "val", 9, ["signed_constant", "normal", "kaiming_uniform"], [0.5, 0.8, 0.9])
    pairs = {(dist, round(float(s), 2)) for dist, s in zip(d.dists, d.sparsity)}
    assert len(pairs) == 9
    w = d.init["layers.0.weight"]
    assert w[0].abs().unique().numel() == 1  # signed constant: one magnitude
    assert torch.equal(w[0], frozen_init(arch, [d.seeds[0]], "signed_constant")["layers.0.weight"][0])


def test_training_keeps_the_best_model_on_validation_never_below_the_construction(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16])
    options = RefinerTraining(steps=6, batch=4, pool=8, val=8, val_every=2, inputs=128, loss_inputs=64, lr=3e-2,
                              dists=("signed_constant", "normal"), sparsities=(0.5, 0.9))  # fmt: skip
    model, history = train_refiner(MaskRefiner(width=8, steps=2), arch, digits, options)
    assert [h["step"] for h in history] == [0, 2, 4, 6] and "loss" not in history[0]
    assert all(h["grad_norm"] > 0 for h in history[1:])
    assert sorted(history[0]["kept_for"]) == [0, 1, 6, 7]  # the untrained rule: the first candidate
    val = draw(arch, "val", 8, options.dists, options.sparsities)
    x, y = prior_data(digits, 128)
    scores = construction_scores(arch, val, x, y, options.construction)
    kept = evaluate(model, arch, val, scores, x, y, digits.x_val, digits.y_val)
    built = evaluate(MaskRefiner(width=8, steps=2), arch, val, scores, x, y, digits.x_val, digits.y_val)
    conditions = model.condition(val.init, val.sparsity)
    for c in (0, 1, 6, 7):  # per condition: never below the untrained rule on validation
        assert kept[conditions == c].mean() >= built[conditions == c].mean()
    bad = RefinerTraining(pool=7, dists=("normal",), sparsities=(0.5, 0.8, 0.9, 0.7))
    with pytest.raises(ConfigError, match=r"^pool: 7 is not a multiple of the 4 init pairs"):
        train_refiner(MaskRefiner(), arch, digits, bad)


def test_a_saved_refiner_reloads_with_its_kept_mlps(tmp_path, digits):
    model = nudged(MaskRefiner(width=8, steps=2), seed=2)
    model.save_pretrained(tmp_path / "refiner")
    back = MaskRefiner.from_pretrained(tmp_path / "refiner")
    assert back.config.steps == 2 and list(back.config.levels) == [0.5, 0.8, 0.9]
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[8])
    init = frozen_init(arch, [1, 2], "kaiming_uniform")
    x, y = prior_data(digits, 128)
    sparsity = torch.tensor([0.5, 0.9])
    scores = least_squares_scores(arch, init, x, y, sparsity)
    a, b = (refine(m, MaskProblem(arch, init, scores, sparsity, x, y)) for m in (model, back))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_mask_logits_are_positive_exactly_where_the_mask_keeps():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 6, 5, generator=g)
    sparsity = torch.tensor([0.5, 0.8, 0.0])
    mask = topk_straight_through(s, sparsity)
    logits = mask_logits(s, mask)
    assert torch.equal(logits > 0, mask > 0) and torch.equal(logits < 0, mask == 0)
    s.requires_grad_()
    mask_logits(s, mask).sum().backward()  # the threshold is read detached: d logit / d score > 0
    assert bool((s.grad > 0).all())


def test_teacher_masks_are_the_teachers_refined_top_k(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16])
    d = draw(arch, "train", 5, ("normal",), (0.5, 0.8))
    x, y = prior_data(digits, 128)
    scores = construction_scores(arch, d, x, y, {"ridge": 0.3, "passes": 3})
    teacher = nudged(MaskRefiner(width=8, steps=2, step_size=0.3), seed=4)
    got = teacher_masks(teacher, arch, d, scores, x, y, chunk=2)  # chunks of 2, 2, 1
    want = refine(teacher, MaskProblem(arch, d.init, scores, d.sparsity, x, y))
    for n, v in want.items():
        assert torch.equal(got[n], topk_straight_through(v, d.sparsity))


def test_distillation_adds_the_teacher_term_to_the_loss(digits):
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[16])
    options = dict(steps=2, batch=4, pool=4, val=4, val_every=1, inputs=128, loss_inputs=64,
                   dists=("normal",), sparsities=(0.5, 0.8))  # fmt: skip
    teacher = nudged(MaskRefiner(width=8, steps=3, step_size=0.3), seed=5)

    def first_loss(distill: float, with_teacher: bool) -> float:
        torch.manual_seed(0)
        student = MaskRefiner(width=8, steps=1)
        _, history = train_refiner(student, arch, digits, RefinerTraining(**options, distill=distill),
                                   teacher=teacher if with_teacher else None)  # fmt: skip
        return history[1]["loss"]

    plain = first_loss(1.0, False)
    assert first_loss(0.0, True) == plain  # weight 0: the function loss alone
    assert first_loss(1.0, True) > plain + 0.05  # a cross-entropy against the teacher's bits


@pytest.mark.parametrize("name", list(ARCHS))
def test_context_features_average_the_gradient_and_kept_bits_over_each_unit_and_input(name, digits):
    arch, init, x, y, sparsity, scores = inits_and_scores(name, digits, [3, 4], "normal", [0.5, 0.8], 64)
    z = standardized(scores)
    plain = features(arch, init, z, z, sparsity, x, y, 0.0)
    f = features(arch, init, z, z, sparsity, x, y, 0.0, context=True)
    for n, v in f.items():
        assert v.shape == (*init[n].shape, FEATURES + CONTEXT) and torch.equal(v[..., :FEATURES], plain[n])
        g, kept = v[..., GRADIENT], (v[..., 2] > 0).float()
        u, i = (
            v.shape[1] - 1,
            v.shape[2] - 1,
        )  # (B, out, in, *kernel): the last unit's fan-in, input's fan-out
        assert torch.allclose(
            v[:, u, 0].reshape(len(v), -1, v.shape[-1])[:, 0, FEATURES], g[:, u].flatten(1).mean(1)
        )
        assert torch.allclose(
            v[:, 0, i].reshape(len(v), -1, v.shape[-1])[:, 0, FEATURES + 1], g[:, :, i].flatten(1).mean(1)
        )
        assert torch.allclose(
            v[:, u, 0].reshape(len(v), -1, v.shape[-1])[:, 0, FEATURES + 2], kept[:, u].flatten(1).mean(1)
        )
        other = (1, *range(3, g.dim()))  # every unit, the kernel: an input's fan-out
        assert torch.allclose(v[..., FEATURES + 3], kept.mean(other, keepdim=True).expand_as(kept))
    model = MaskRefiner(width=8, steps=2, context=True)
    s = refine(
        model, MaskProblem(arch, init, least_squares_scores(arch, init, x, y, sparsity), sparsity, x, y)
    )
    assert set(s) == set(z)  # a context model refines (its MLPs read FEATURES + CONTEXT)


def test_decay_anneals_the_learning_rate_to_zero(digits, monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[8])
    options = RefinerTraining(steps=4, batch=2, pool=2, val=2, val_every=4, inputs=64, loss_inputs=32, lr=0.01,
                              dists=("normal",), sparsities=(0.5,), decay=True)  # fmt: skip
    train_refiner(MaskRefiner(width=4, steps=1), arch, digits, options)
    assert seen[0] == 0.01 and all(a > b for a, b in zip(seen, seen[1:])) and len(seen) == 4
    seen.clear()
    train_refiner(
        MaskRefiner(width=4, steps=1), arch, digits, RefinerTraining(**{**options.__dict__, "decay": False})
    )
    assert seen == [0.01] * 4


def test_clip_bounds_the_gradient_norm_each_step_takes(digits, monkeypatch):
    norms = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        grads = [p.grad for p in self.param_groups[0]["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    arch = build_architecture("mlp", digits.input_shape, 10, hidden=[8])
    options = RefinerTraining(steps=3, batch=2, pool=2, val=2, val_every=3, inputs=64, loss_inputs=32,
                              dists=("normal",), sparsities=(0.5,))  # fmt: skip
    torch.manual_seed(0)
    train_refiner(MaskRefiner(width=4, steps=1), arch, digits, options)
    free, norms[:] = list(norms), []
    torch.manual_seed(0)
    clip = min(free) / 10
    train_refiner(
        MaskRefiner(width=4, steps=1), arch, digits, RefinerTraining(**{**options.__dict__, "clip": clip})
    )
    assert min(free) > 0 and len(norms) == 3
    assert all(n <= clip * (1 + 1e-4) for n in norms)  # unclipped, every step's norm was 10x this
