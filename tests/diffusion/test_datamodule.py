"""ZooDataModule: splits by member, conditions, G.pt pairs, worker-independent batches, saved state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import (
    ZooDataModule,
    ZooTokens,
    _pairs,
    balance_weights,
    collate,
    dense_parents,
    fresh_seed,
    split_members,
)
from mole.errors import ConfigError
from mole.tokenizer import MemberTensors, NeuronTokenizer
from mole.zoo import store
from tests.diffusion.helpers import mixed_zoos
from tests.tokenizer.helpers import CNN, random_member, tiny_zoo, variant_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """TINY_ZOO's dense trajectories plus masked / quantized / low-rank / supermask rows per member."""
    return variant_zoo(tiny_zoo(tmp_path_factory), tmp_path_factory.mktemp("variant-zoo") / "zoo")


def make(zoo, cache, **kw) -> ZooDataModule:
    kw = {"batch_size": 8, "fractions": (0.5, 0.25, 0.25), "cache_dir": cache, **kw}
    dm = ZooDataModule(zoo if isinstance(zoo, list) else str(zoo), **kw)
    dm.setup()
    return dm


def test_no_member_in_two_splits(zoo, cache):
    dm = make(zoo, cache)
    table = store.read_zoo(zoo, columns=["member_index", "member_id", "variant"]).to_pylist()
    split_of = {s: set(m.tolist()) for s, m in dm.splits.items()}
    assert sum(len(v) for v in split_of.values()) == len(set().union(*split_of.values())) == 6
    for split, ds in dm.datasets.items():
        rows = [table[i] for i in ds.rows]
        assert {r["member_index"] for r in rows} == split_of[split]
        assert len({r["variant"] for r in rows}) == 6  # every variant of a member comes along
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) + len(dm.datasets["test"]) == len(table)
    again = make(zoo, cache)
    assert all(np.array_equal(again.splits[s], dm.splits[s]) for s in dm.splits)
    other = split_members(range(100), (0.8, 0.1, 0.1), seed=1)
    assert [len(other[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert not set(other["train"]) & set(other["val"]) and not set(other["val"]) & set(other["test"])


def test_items_are_normalised_tokens_with_conditions(zoo, cache):
    dm = make(zoo, cache, tokenizer="neuron")
    ds = dm.datasets["train"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["tokens"].dtype == torch.float32 and batch["tokens"].dim() == 3
    assert set(batch["cond"]) == {
        "test_acc",
        "test_loss",
        "sparsity",
        "bits",
        "rank",
        "variant",
        "architecture",
        "task",
    }
    assert dm.vocab["variant"] == ["dense", "lowrank", "magnitude", "neuron_pruned", "quantized", "supermask"]
    assert batch["cond"]["test_acc"].dtype == torch.float32 and batch["cond"]["variant"].dtype == torch.int64
    t_dense = None
    for i in range(len(ds)):
        item, row = ds[i], ds.row(ds.rows[i])
        m = MemberTensors.from_row(row)
        tokens, layout = dm.tokenizer.tokenize(m)
        assert torch.equal(item["tokens"], dm.tokenizer.normalize(tokens, layout))
        assert (
            dm.tokenizer.detokenize(dm.tokenizer.denormalize(item["tokens"], layout), layout).present()
            == m.present()
        )
        cond = item["cond"]
        assert dm.vocab["variant"][cond["variant"]] == row["variant"]
        assert cond["bits"] == (4 if row["variant"] == "quantized" else 32)
        assert cond["rank"] == (2 if row["variant"] == "lowrank" else 0)
        if row["variant"] == "dense":
            t_dense = item["tokens"].shape
    lowrank = next(i for i in range(len(ds)) if ds.row(ds.rows[i])["variant"] == "lowrank")
    dense = next(i for i in range(len(ds)) if ds.row(ds.rows[i])["variant"] == "dense")
    narrow = next(i for i in range(len(ds)) if ds.row(ds.rows[i])["variant"] == "neuron_pruned")
    batch = collate([ds[lowrank], ds[dense], ds[narrow]])  # V factors add tokens, a narrower net has fewer
    assert batch["token_valid"][0].all() and batch["token_valid"][1].sum() == t_dense[0]
    assert batch["token_valid"][2].sum() == t_dense[0] - 4  # 12 hidden neurons instead of 16
    assert (batch["layer_ids"][1, t_dense[0] :] == -1).all()


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:  # numpy scalars of a single item's conditions
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("mode", ["checkpoints", "pairs"])
def test_workers_give_the_same_batches(zoo, cache, mode):
    serial = list(make(zoo, cache, mode=mode, tokenizer="layer_chunk", num_workers=0).train_dataloader())
    parallel = list(make(zoo, cache, mode=mode, tokenizer="layer_chunk", num_workers=2).train_dataloader())
    assert len(serial) == len(parallel) > 1
    for a, b in zip(serial, parallel):
        assert_same(a, b)


def test_pairs_are_ordered_snapshots_of_one_run(zoo, cache):
    dm = make(zoo, cache, mode="pairs")
    ds = dm.datasets["train"]
    table = store.read_zoo(zoo, columns=["member_id", "step", "test_loss"]).to_pylist()
    runs = [r for r in ds.runs if len(r) > 1]
    assert len(ds) == sum(len(r) * (len(r) - 1) // 2 for r in runs)
    assert all(len(r) == 1 for r in ds.runs if table[r[0]]["member_id"].endswith(("quantized", "lowrank")))
    for idx in range(0, len(ds), 7):
        item = ds[idx]
        run = int(np.searchsorted(ds.offsets, idx, side="right")) - 1
        starts = {torch.tensor(table[i]["test_loss"], dtype=torch.float32).item() for i in ds.runs[run]}
        assert item["cond"]["start_test_loss"].item() in starts
        assert item["start_tokens"].shape == item["tokens"].shape
    first = ds.runs[0]
    steps = [table[i]["step"] for i in first]
    assert steps == sorted(steps) and len({table[i]["member_id"] for i in first}) == 1


def test_canonical_pairs_put_the_start_in_its_ends_neuron_order(zoo, cache):
    dm = make(zoo, cache, mode="pairs", tokenizer_options={"canonical": "sort"})
    ds, tok = dm.datasets["train"], dm.tokenizer
    moved = False
    for idx in range(0, len(ds), 3):
        run = int(np.searchsorted(ds.offsets, idx, side="right")) - 1
        i, j = _pairs(len(ds.runs[run]))[idx - ds.offsets[run]]
        start, end = (MemberTensors.from_row(ds.row(ds.runs[run][k])) for k in (i, j))
        item = ds[idx]
        assert torch.equal(item["tokens"], tok.normalize(*tok.tokenize(end)))  # the end: its own order
        raw, layout = tok.tokenize(start, tok.reorder(end)[1])
        assert torch.equal(item["start_tokens"], tok.normalize(raw, layout))  # the start: the end's
        back = tok.detokenize(raw, layout)  # the same network, neurons renamed
        assert all(torch.equal(back.params[n], p) for n, p in start.params.items())
        moved |= not torch.equal(item["start_tokens"], tok.normalize(*tok.tokenize(start)))
    assert moved  # somewhere the end's order is not the start's own


def test_fresh_starts_replace_a_share_of_the_init_starts_by_fresh_inits(zoo, cache):
    dm = make(zoo, cache, mode="pairs", fresh_starts=1.0, tokenizer_options={"canonical": "sort"})
    ds, tok = dm.datasets["train"], dm.tokenizer
    plain = make(zoo, cache, mode="pairs", tokenizer_options={"canonical": "sort"}).datasets["train"]
    fresh = kept = 0
    for idx in range(len(ds)):
        run = int(np.searchsorted(ds.offsets, idx, side="right")) - 1
        i, j = _pairs(len(ds.runs[run]))[idx - ds.offsets[run]]
        first, end = ds.runs[run][i], ds.runs[run][j]
        item, before = ds[idx], plain[idx]
        assert torch.equal(item["tokens"], before["tokens"])  # the end is never touched
        if ds.column("step", first) != 0:
            assert torch.equal(item["start_tokens"], before["start_tokens"])
            kept += 1
            continue
        like = MemberTensors.from_row(ds.row(first))
        drawn = like.arch.init_stacked([fresh_seed(idx)], [ds.column("init_scale", first)])
        want = tok.normalize(
            *tok.tokenize(like.replace(params={n: p[0] for n, p in drawn.items()}), ds.order(end))
        )
        assert torch.equal(item["start_tokens"], want) and not torch.equal(want, before["start_tokens"])
        assert item["cond"]["start_test_loss"] == before["cond"]["start_test_loss"]  # the run's init's
        assert fresh_seed(idx) >= 2**32
        fresh += 1
    assert fresh and kept
    assert all(not dm.datasets["val"].fresh(i) for i in range(len(dm.datasets["val"])))  # training only
    half = make(zoo, cache, mode="pairs", fresh_starts=0.5).datasets["train"]
    share = np.mean([half.fresh(i) for i in range(2000)])
    assert 0.45 < share < 0.55
    with pytest.raises(ConfigError, match=r"^fresh_starts: must be a share in \[0, 1\], got 1.5"):
        ZooDataModule(str(zoo), mode="pairs", fresh_starts=1.5)
    with pytest.raises(ConfigError, match="^fresh_starts: replaces starts of pairs: it needs mode pairs"):
        ZooDataModule(str(zoo), fresh_starts=0.5)


def test_stay_pairs_pair_each_training_snapshot_with_itself(zoo, cache):
    dm = make(zoo, cache, mode="pairs", stay_pairs=True, fresh_starts=1.0)
    ds, val = dm.datasets["train"], dm.datasets["val"]
    runs = [r for r in ds.runs if len(r) > 1]
    assert len(ds) == sum(len(r) * (len(r) + 1) // 2 for r in ds.runs)  # n(n+1)/2 per run
    assert len(val) == sum(len(r) * (len(r) - 1) // 2 for r in val.runs)  # training pairs only
    stays = 0
    for idx in range(len(ds)):
        run = int(np.searchsorted(ds.offsets, idx, side="right")) - 1
        i, j = _pairs(len(ds.runs[run]), True)[idx - ds.offsets[run]]
        assert i <= j
        if i == j:  # the start is its end, with its own loss, and never a fresh init
            item = ds[idx]
            assert torch.equal(item["start_tokens"], item["tokens"])
            assert item["cond"]["start_test_loss"] == item["cond"]["test_loss"]
            stays += 1
    assert stays == sum(len(r) for r in ds.runs) and runs
    with pytest.raises(ConfigError, match="^stay_pairs: pairs a snapshot with itself: it needs mode pairs"):
        ZooDataModule(str(zoo), stay_pairs=True)


def test_reverse_pairs_run_a_share_of_the_training_pairs_backward_in_time(zoo, cache):
    sort = {"canonical": "sort"}
    dm = make(
        zoo, cache, mode="pairs", reverse_pairs=0.5, stay_pairs=True, fresh_starts=1.0, tokenizer_options=sort
    )
    ds, val = dm.datasets["train"], dm.datasets["val"]
    plain = make(zoo, cache, mode="pairs", stay_pairs=True, tokenizer_options=sort).datasets["train"]
    assert len(ds) == len(plain)  # the same pairs, some of them turned round
    back = 0
    for idx in range(len(ds)):
        run, i, j = ds.positions(idx)
        _, i0, j0 = plain.positions(idx)
        item = ds[idx]
        if i0 == j0:  # a stay is never reversed
            assert (i, j) == (i0, j0) and torch.equal(item["start_tokens"], item["tokens"])
            continue
        if not ds.reversed_pair(idx):
            assert (i, j) == (i0, j0)
            continue
        back += 1
        assert (i, j) == (j0, i0) and i > j
        start, end = ds.runs[run][i], ds.runs[run][j]
        assert ds.column("step", start) > ds.column("step", end)
        want_end, _, end_cond = ds.encode(end)
        want_start, _, start_cond, _ = ds._encode_row(start, ds.order(end))  # never a fresh init
        assert torch.equal(item["tokens"], want_end) and torch.equal(item["start_tokens"], want_start)
        assert item["cond"]["test_loss"] == end_cond["test_loss"]
        assert item["cond"]["start_test_loss"] == start_cond["test_loss"]
    assert back
    assert not any(val.reversed_pair(i) for i in range(len(val)))  # training pairs only
    half = np.mean([ds.reversed_pair(i) for i in range(4000)])
    assert 0.45 < half < 0.55
    half_fresh = [fresh_seed(i) % 10**6 < 0.5 * 10**6 for i in range(4000)]  # fresh_starts 0.5's draw
    both = np.mean([ds.reversed_pair(i) and f for i, f in enumerate(half_fresh)])
    assert 0.2 < both < 0.3  # drawn apart from the fresh starts: about a quarter are both
    with pytest.raises(ConfigError, match=r"^reverse_pairs: must be a share in \[0, 1\], got -0.1"):
        ZooDataModule(str(zoo), mode="pairs", reverse_pairs=-0.1)
    with pytest.raises(ConfigError, match="^reverse_pairs: reverses pairs: it needs mode pairs"):
        ZooDataModule(str(zoo), reverse_pairs=0.5)


def test_reverse_pairs_can_keep_every_pair_from_an_init_forward(zoo, cache):
    ds = make(zoo, cache, mode="pairs", reverse_pairs=1.0, reverse_to_init=False).datasets["train"]
    everywhere = make(zoo, cache, mode="pairs", reverse_pairs=1.0).datasets["train"]
    kept = back = 0
    for idx in range(len(ds)):
        run, i, j = ds.positions(idx)
        first, last = ds.runs[run][min(i, j)], ds.runs[run][max(i, j)]
        assert everywhere.positions(idx) == (run, max(i, j), min(i, j))  # every pair reversed there
        if ds.column("step", first) == 0:  # from an init: forward, whatever the share drew
            assert i < j and ds.column("step", ds.runs[run][i]) == 0
            kept += 1
        else:
            assert i > j and ds.column("step", ds.runs[run][i]) == ds.column("step", last)
            back += 1
    assert kept and back


def test_dense_teacher_gives_each_pruned_row_its_members_last_dense_snapshot(zoo, cache):
    dm = make(zoo, cache, variants=["dense", "magnitude"], dense_teacher=True)
    ds = dm.datasets["train"]
    table = store.read_zoo(zoo).select(["member_index", "variant", "step", "val_acc"]).to_pylist()
    parents = np.full(len(table), -1)
    for idx in range(len(ds)):
        row = int(ds.rows[idx])
        if table[row]["variant"] != "magnitude":  # a dense row teaches itself
            assert ds.teachers[row] == -1
            continue
        mine = [
            i
            for i, r in enumerate(table)
            if r["variant"] == "dense" and r["member_index"] == table[row]["member_index"]
        ]
        parents[row] = max(mine, key=lambda i: table[i]["step"])
        better = table[parents[row]]["val_acc"] > table[row]["val_acc"]  # the better net teaches
        assert ds.teachers[row] == (parents[row] if better else -1)
        if not better:
            assert torch.equal(ds[idx]["teacher_tokens"], ds[idx]["tokens"])
    assert (parents >= 0).any()
    # every magnitude row taught by its parent: its items carry the parent's tokens
    taught = ZooTokens(ds.dataset, ds.rows, ds.tokenizer, ds.vocab, teachers=parents)
    for idx in range(len(taught)):
        item, row = taught[idx], int(ds.rows[idx])
        want = item["tokens"] if parents[row] < 0 else ds.encode(parents[row])[0]
        assert torch.equal(item["teacher_tokens"], want)
        assert parents[row] < 0 or not torch.equal(item["teacher_tokens"], item["tokens"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher_tokens"].shape == batch["tokens"].shape
    assert "teacher_tokens" not in make(zoo, cache, variants=["dense", "magnitude"]).datasets["train"][0]
    with pytest.raises(ConfigError, match="^dense_teacher: teaches single weight checkpoints"):
        ZooDataModule(str(zoo), mode="pairs", dense_teacher=True)
    col = {"variant": np.array(["dense", "imp", "magnitude", "magnitude"]), "member_index": np.array([0, 0, 1, 0]),
           "step": np.array([9, 9, 9, 9]), "member_id": np.array(["a", "a-imp", "b-magnitude", "a-magnitude"]),
           "val_acc": np.array([0.8, 0.7, 0.5, 0.9])}  # fmt: skip
    with pytest.raises(
        ConfigError, match="^dense_teacher: pruned member 'b-magnitude' has no dense snapshot"
    ):
        dense_parents(col, np.zeros(4, dtype=np.int64), np.arange(4))
    kept = np.array([0, 1, 3])  # the worse IMP row is taught by its parent, the better magnitude row not
    assert dense_parents(col, np.zeros(4, dtype=np.int64), kept).tolist() == [-1, 0, -1, -1]


def test_saved_tokenizer_and_vocab_reload(zoo, cache, tmp_path):
    dm = make(zoo, cache)
    dm.save(tmp_path / "dm")
    state = json.loads((tmp_path / "dm" / "datamodule.json").read_text())
    assert state["vocab"] == dm.vocab and state["splits"]["val"] == dm.splits["val"].tolist()
    again = make(zoo, cache, tokenizer_dir=str(tmp_path / "dm" / "tokenizer"))
    assert_same(again.datasets["test"][0], dm.datasets["test"][0])
    again.load_state_dict(dm.state_dict())  # same zoo and seed: accepted
    with pytest.raises(ConfigError, match="^splits: the checkpoint's splits differ"):
        make(zoo, cache, seed=5).load_state_dict(dm.state_dict())
    NeuronTokenizer().fit([random_member(CNN, "dense")]).save(tmp_path / "cnn")
    with pytest.raises(ConfigError, match="^tokenizer: tokenizer built for cnn .*, got mlp"):
        make(zoo, cache, tokenizer_dir=str(tmp_path / "cnn"))
    with pytest.raises(ConfigError, match="fractions"):
        ZooDataModule(str(zoo), fractions=(0.5, 0.5, 0.5))


def test_cached_items_equal_fresh_ones_and_the_cache_is_bounded(zoo, cache):
    cached = make(zoo, cache, cache_items=3, tokenizer_options={"canonical": "match"})
    fresh = make(zoo, cache, cache_items=0, tokenizer_options={"canonical": "match"})
    a, b = cached.datasets["train"], fresh.datasets["train"]
    for _ in range(2):  # the second pass reads the cache for the first three items
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert torch.equal(x["tokens"], y["tokens"]) and x["cond"] == y["cond"]
    assert len(a._cache) == 3 and len(b._cache) == 0
    with pytest.raises(ConfigError, match="cache_items: must be >= 0"):
        ZooDataModule(str(zoo), cache_items=-1)


def test_balance_weights_draw_each_bin_by_the_root_of_its_count():
    values = np.array([0.0] * 9 + [0.05] * 7 + [1.0])  # bins of 10 over [0, 1]: 16 rows in the first
    w = balance_weights(values).numpy()
    np.testing.assert_allclose(w, [1 / 4] * 16 + [1.0])
    assert w[:16].sum() / w[16:].sum() == pytest.approx(np.sqrt(16) / np.sqrt(1))  # mass ~ sqrt(count)
    assert balance_weights(np.full(5, 0.3)).tolist() == [1 / np.sqrt(5)] * 5  # one value: one bin


def test_balance_draws_train_rows_by_weight(zoo, cache):
    dm = make(zoo, cache, balance="test_acc")
    train = dm.datasets["train"]
    acc = store.read_zoo(zoo, columns=["test_acc"]).column("test_acc").to_numpy()[train.rows]
    assert torch.equal(dm.train_weights, balance_weights(acc))
    assert len(set(np.round(acc, 6))) > 1 and len(set(dm.train_weights.tolist())) > 1  # uneven bins
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler)
    drawn = [i for _ in range(200) for i in loader.sampler]  # positions in the train split
    share = np.bincount(drawn, minlength=len(train)) / len(drawn)
    np.testing.assert_allclose(share, (dm.train_weights / dm.train_weights.sum()).numpy(), atol=0.01)
    assert not isinstance(make(zoo, cache).train_dataloader().sampler, WeightedRandomSampler)
    val = next(iter(dm.val_dataloader()))  # validation is not reweighted
    assert val["tokens"].shape[0] == min(8, len(dm.datasets["val"]))
    with pytest.raises(ConfigError, match="^balance: unknown 'sparsity'; valid: test_acc, test_loss"):
        ZooDataModule(str(zoo), balance="sparsity")
    with pytest.raises(ConfigError, match="^balance: .*use mode checkpoints"):
        ZooDataModule(str(zoo), mode="pairs", balance="test_acc")


# ---------------------------------------------------------------------------- a mixed zoo
def test_a_mixed_zoo_is_split_by_member_zoo_by_zoo(tmp_path_factory, cache):
    zoos = mixed_zoos(tmp_path_factory)
    dm = make([str(z) for z in zoos], cache, fractions=(0.5, 0.25, 0.25))
    assert dm.zoo == zoos and len(dm.tokenizer.families) == 3  # the two digits MLP widths share one
    tables = [store.read_zoo(z).to_pylist() for z in zoos]
    rows = [(z, r) for z, t in enumerate(tables) for r in t]  # the concatenated zoo's row order
    owner: dict[tuple, str] = {}
    for split, ds in dm.datasets.items():
        pairs = {tuple(p) for p in dm.splits[split].tolist()}
        for z, table in enumerate(tables):  # each zoo's members split on their own, same fractions and seed
            alone = split_members(sorted({r["member_index"] for r in table}), (0.5, 0.25, 0.25), 0)[split]
            assert {m for zz, m in pairs if zz == z} == set(alone.tolist())
        for i in ds.rows:
            z, r = rows[i]
            assert (z, r["member_index"]) in pairs
            assert owner.setdefault((z, r["member_index"]), split) == split  # a member lives in one split
    assert len(owner) == sum(len({r["member_index"] for r in t}) for t in tables)
    assert sum(len(ds) for ds in dm.datasets.values()) == len(rows)
    again = make([str(z) for z in zoos], cache, fractions=(0.5, 0.25, 0.25))
    again.load_state_dict(dm.state_dict())  # the same zoos and seed: the same [zoo, member] split
    with pytest.raises(ConfigError, match="^zoo: an empty list of zoos$"):
        ZooDataModule([])


def test_mixed_items_carry_their_cell_and_pad_to_the_longest(tmp_path_factory, cache):
    zoos = mixed_zoos(tmp_path_factory)
    dm = make([str(z) for z in zoos], cache, fractions=(1.0, 0.0, 0.0))
    described = {(s["architecture"], tuple(s["arch_config"]["hidden"]), s["task"]) for s in dm.cells}
    assert described == {("cnn", (4,), "digits"), ("mlp", (16,), "digits"), ("mlp", (8,), "digits"),
                         ("mlp", (8, 8), "mnist1d")}  # fmt: skip
    narrow = next(s for s in dm.cells if s["arch_config"]["hidden"] == [8] and s["task"] == "digits")
    assert narrow["variants"] == ["neuron_pruned"]
    ds = dm.datasets["train"]
    items = [ds[i] for i in range(len(ds))]
    batch = collate(items)
    assert batch["tokens"].shape[1] == max(it["tokens"].shape[0] for it in items)
    for k, it in enumerate(items):
        s = dm.cells[int(it["cell"])]
        row = ds.row(ds.rows[k])
        assert (s["architecture"], s["task"]) == (row["architecture"], row["task"])
        assert s["arch_config"] == json.loads(row["arch_options"])
        t = it["tokens"].shape[0]
        assert batch["token_valid"][k].sum() == t and not batch["tokens"][k, t:].any()
    assert model_args(dm)["max_tokens"] == batch["tokens"].shape[1]  # one token width for all of them


def test_a_mask_model_refuses_a_mixed_zoo(tmp_path_factory, cache):
    zoos = [str(z) for z in mixed_zoos(tmp_path_factory)]
    with pytest.raises(
        ConfigError, match=r"^target: mask learns one architecture and task, these rows hold 4$"
    ):
        make(zoos, cache, target="mask", variants=["dense", "neuron_pruned"])


def test_balance_by_cell_draws_each_cell_equally(tmp_path_factory, cache):
    zoos = [str(z) for z in mixed_zoos(tmp_path_factory)]
    dm = make(zoos, cache, fractions=(1.0, 0.0, 0.0), balance="cell")
    ds = dm.datasets["train"]
    mine = np.array([ds.cell[r] for r in ds.rows])
    counts = np.bincount(mine)
    assert counts.max() > 2 * counts.min()  # the zoos' cells hold very different row counts
    share = np.bincount(mine, weights=dm.train_weights.numpy()) / dm.train_weights.sum().item()
    np.testing.assert_allclose(share, 1 / len(counts))
