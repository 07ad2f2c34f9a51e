"""Self-conditioning: the denoiser reads a previous x0 estimate, training feeds it the model's own
half the time, and sampling hands each DDIM step the x0 the step before predicted."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import ZooDataModule
from mole.diffusion.denoiser import Denoiser
from mole.diffusion.options import SampleOptions
from mole.diffusion.sample import sample_weights
from mole.diffusion.system import DiffusionSystem, x0_of
from mole.errors import ConfigError
from mole.tokenizer import MemberTensors, NeuronTokenizer
from mole.zoo import store
from tests.diffusion.test_denoiser import B, D, T, inputs, perturbed, tiny
from tests.diffusion.test_system import TINY
from tests.tokenizer.helpers import tiny_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


def test_the_estimate_is_embedded_from_zero_and_saved_with_the_model(tmp_path):
    x, t, cond, ids, valid = inputs()
    estimate = torch.randn(B, T, D, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    plain = tiny()
    torch.manual_seed(0)
    model = tiny(self_condition=True)
    for name, p in plain.state_dict().items():  # built last: every other weight draws as before
        assert torch.equal(model.state_dict()[name], p), name
    model = perturbed(model)
    model.self_embed.weight.data.zero_()
    model.self_embed.bias.data.zero_()  # as built: the estimate changes nothing
    base = model(x, t, cond, ids, valid)
    assert torch.equal(model(x, t, cond, ids, valid, estimate=estimate), base)
    model = perturbed(model, seed=1)
    out = model(x, t, cond, ids, valid, estimate=estimate)
    zeros = model(x, t, cond, ids, valid, estimate=torch.zeros_like(estimate))
    assert not torch.allclose(out, zeros)
    assert torch.equal(model(x, t, cond, ids, valid), zeros)  # no estimate reads as zeros
    plain = perturbed(plain)
    assert torch.equal(plain(x, t, cond, ids, valid, estimate=estimate), plain(x, t, cond, ids, valid))
    model.save_pretrained(tmp_path / "denoiser")
    again = Denoiser.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False).eval()
    assert again.config.self_condition and torch.equal(again(x, t, cond, ids, valid, estimate=estimate), out)


def test_training_feeds_back_the_models_own_estimate_half_the_time(zoo, tmp_path, monkeypatch):
    dm = ZooDataModule(str(zoo), batch_size=4, cache_dir=tmp_path / "cache")
    net = perturbed(Denoiser(**model_args(dm), **TINY, self_condition=True)).train()
    system = DiffusionSystem(net, prediction_type="v_prediction")
    batch = next(iter(dm.train_dataloader()))
    calls = []
    forward = Denoiser.forward

    def record(self, x, t, *args, **kw):
        out = forward(self, x, t, *args, **kw)
        estimate = args[5] if len(args) > 5 else kw.get("estimate")  # after cond, ids, valid, start, drop
        calls.append((x, t, estimate, out, torch.is_grad_enabled()))
        return out

    monkeypatch.setattr(Denoiser, "forward", record)
    fed = 0
    for seed in range(12):
        calls.clear()
        system.loss(batch, generator=torch.Generator().manual_seed(seed))
        assert calls[0][2] is None  # the first call reads "no estimate yet" (the denoiser's zeros)
        if len(calls) == 2:  # the model's own x0, without gradient, then the trained call
            (x, t, _, first, grad_first), (_, _, estimate, _, grad_second) = calls
            assert not grad_first and grad_second
            torch.testing.assert_close(estimate, x0_of(system.scheduler, "v_prediction", x, first, t))
            fed += 1
        else:
            assert len(calls) == 1
    assert 0 < fed < 12
    with pytest.raises(ConfigError, match="^model.net.self_condition: needs prediction_type 'sample'"):
        DiffusionSystem(net, prediction_type="epsilon")


def test_sampling_hands_each_step_the_last_x0(zoo):
    rows = store.read_zoo(zoo).to_pylist()
    members = [MemberTensors.from_row(r) for r in rows if r["variant"] == "dense"]
    tok = NeuronTokenizer().fit(members)
    layout = tok.plan(members[0].architecture, members[0].arch_config, [], None)
    t_len, d = layout["shape"]
    torch.manual_seed(0)
    net = perturbed(Denoiser(token_dim=d, max_tokens=t_len, num_layers_ids=8, self_condition=True, **TINY))
    seen = []
    forward = Denoiser.forward

    def record(self, x, t, cond=None, *args, **kw):
        out = forward(self, x, t, cond, *args, **kw)
        seen.append((kw["estimate"].clone(), out))
        return out

    meta = {
        "architecture": members[0].architecture,
        "arch_config": members[0].arch_config,
        "normalized": True,
    }
    sched = DDPMScheduler(prediction_type="sample", clip_sample=False)
    try:
        Denoiser.forward = record
        sample_weights(net, sched, tok, meta, {}, 2, SampleOptions(steps=4, seed=0), None, lambda n: None)
    finally:
        Denoiser.forward = forward
    assert len(seen) == 4 and torch.count_nonzero(seen[0][0]) == 0
    for (_, before), (estimate, _) in zip(seen, seen[1:]):
        assert torch.equal(estimate, before)  # x0 prediction: the estimate is the last output itself
