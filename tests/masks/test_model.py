"""MaskModel: logits per weight from the frozen weights' context, the per-entry read, save/load, bad configs."""

from __future__ import annotations

import pytest
import torch

from mole.diffusion.datamodule import collate
from mole.errors import ConfigError
from mole.masks.model import MaskModel
from tests.masks.helpers import TINY, mask_rows

B, T, W = 3, 7, 4
CHANNELS = {"params": [0, W], "mask": [W, 2 * W], "init_params": [2 * W, 3 * W]}
CONDITIONS = {
    "sparsity": {"kind": "continuous", "min": 0.5, "max": 0.9},
    "variant": {"kind": "categorical", "vocab": ["dense", "supermask"]},
}


def tiny(**kw) -> MaskModel:
    args = {
        "token_dim": W,
        "max_tokens": 8,
        "num_layers_ids": 2,
        "channels": CHANNELS,
        "conditions": CONDITIONS,
    }
    return MaskModel(**{**args, **TINY, **kw})


def perturbed(model: MaskModel, seed: int = 0) -> MaskModel:
    """Zero-initialised adaLN, decoder and gain make every logit 0: randomise them so tests see something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(B, T, W, generator=g)  # (B, T, w) the frozen weights' channel group
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 1]).expand(B, T).clone()  # (B, T)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 5:] = False  # row 1 has two padding tokens
    ids[1, 5:] = -1
    cond = {"sparsity": torch.tensor([0.5, 0.8, 0.9]), "variant": torch.tensor([1, 1, 0])}
    return context, cond, ids, valid


def test_logits_come_from_the_context_and_the_prompt():
    context, cond, ids, valid = inputs()
    assert torch.count_nonzero(tiny()(context, cond, ids, valid)) == 0  # DiT's zero init, the gain too
    model = perturbed(tiny())
    logits = model(context, cond, ids, valid)
    assert logits.shape == (B, T, W)  # one logit per weight channel
    assert torch.count_nonzero(logits[1, 5:]) == 0  # padding tokens' logits are zero
    assert not torch.allclose(logits, model(context + 1, cond, ids, valid))
    assert not torch.allclose(logits, model(context, {"variant": cond["variant"]}, ids, valid))
    dropped = model(context, cond, ids, valid, drop={"sparsity": torch.ones(B, dtype=torch.bool)})
    assert torch.allclose(dropped, model(context, {"variant": cond["variant"]}, ids, valid))
    with pytest.raises(ValueError, match="context has 5 channels, the mask model expects 4"):
        model(torch.zeros(B, T, 5), cond, ids, valid)


def test_logits_read_each_weights_value(mask_zoo, cache):
    dm, args, _ = mask_rows(mask_zoo, cache)
    model = MaskModel(**args, **TINY)
    ds = dm.datasets["train"]
    batch = collate([ds[i] for i in range(2)])
    context = batch["tokens"][..., slice(*model.config.channels["init_params"])]
    call = (context, {}, batch["layer_ids"], batch["token_valid"])
    assert model(*call).abs().max() == 0
    with torch.no_grad():
        model.entry_gain.fill_(2.0)
    torch.testing.assert_close(model(*call), 2 * context * batch["token_valid"][..., None])


def test_save_pretrained_round_trip(tmp_path):
    model = perturbed(tiny(position_embedding=False))
    model.save_pretrained(tmp_path / "mask_model")
    again = MaskModel.from_pretrained(tmp_path / "mask_model", low_cpu_mem_usage=False).eval()
    public = lambda m: {k: v for k, v in m.config.items() if not k.startswith("_")}  # noqa: E731
    assert public(again) == public(model) and again.config.channels == CHANNELS
    assert again.pos_embed is None
    context, cond, ids, valid = inputs()
    assert torch.equal(model(context, cond, ids, valid), again(context, cond, ids, valid))


def test_bad_configs_are_one_line_errors():
    with pytest.raises(
        ConfigError, match=r"^mask_model\.channels: needs the groups params, mask, init_params"
    ):
        tiny(channels=None)
    with pytest.raises(ConfigError, match=r"^mask_model\.channels: .* each 4 wide"):
        tiny(channels={**CHANNELS, "mask": [4, 9]})
    with pytest.raises(ConfigError, match=r"^mask_model\.heads: width 32 is not divisible by 3 heads"):
        tiny(heads=3)
    with pytest.raises(ConfigError, match=r"^mask_model\.conditions\.sparsity: needs kind in"):
        tiny(conditions={"sparsity": {"min": 0.5}})
