"""ZooDataModule: token tensors and their conditions streamed from a zoo's shards, split by member.

The zoo is opened through `datasets` (Arrow, memory-mapped); every item reads its row(s) on demand
and tokenizes them in `__getitem__`, so memory stays bounded by a batch, not by the zoo. Splits are
by `member_index`: every snapshot and every variant derived from one base member (pruned, quantized,
...) lands in the same split, so no training member leaks into validation or test.

A mixed zoo (one denoiser for several architectures and tasks) is given as a list of zoo folders,
`data.zoo: [zoos/digits_mlp, zoos/digits_cnn, zoos/mnist1d_mlp]`: their rows are read together
(`datasets.concatenate_datasets`), and each zoo's members are split on their own with the same
fractions and seed (member indices restart in every zoo, so a pair (zoo, member) names a member).
Every row belongs to a *cell*, its (architecture, arch_options, task, task_options): items
carry its id ("cell", into `ZooDataModule.cells`), so the function-space loss runs each row
with its own network on its own task's inputs, and the exported model lists the cells it saw,
which sampling picks from (mole.diffusion.cells).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torch.utils.data._utils.collate import default_collate

from mole.conditions import CATEGORICAL
from mole.conditions import conditions as item_conditions
from mole.errors import ConfigError, check_choice
from mole.tokenizer import MemberTensors, Tokenizer, build_tokenizer
from mole.tokenizer.layout import valid_mask
from mole.zoo.store import load_zoo_dataset, write_json

MODES = ("checkpoints", "pairs")
TARGETS = ("weights", "mask")  # what the rows train: the denoiser (all tokens) or the mask model
MASK_VARIANTS = ["supermask"]  # rows whose mask sits over frozen random weights (target "mask")
PRUNED_VARIANTS = ("magnitude", "imp", "random_prune")  # masked rows of their member's own architecture
CELL_COLUMNS = ("architecture", "arch_options", "task", "task_options")  # what a cell is
ROW_COLUMNS = [
    "architecture", "arch_options", "extra", "params", "mask", "init_params", "codes", "scales",
    "factors", "test_acc", "test_loss", "sparsity", "bits", "rank", "variant", "task", "variant_config",
]  # fmt: skip
TENSOR_COLUMNS = {"params", "mask", "init_params", "codes", "scales", "factors"}
BALANCE_COLUMNS = ("test_acc", "test_loss")  # the columns `balance` may even out
BALANCE = (*BALANCE_COLUMNS, "cell")  # ... or the rows' cells (a mixed zoo)
BALANCE_BINS = 10


def split_members(members: Sequence[int], fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Shuffle member indices with `seed` and cut them into train / val / test by `fractions`.

    Counts are rounded down, the remainder going to train, so a split never gets a member its
    fraction did not ask for.
    """
    members = np.sort(np.asarray(members))
    order = np.random.default_rng(seed).permutation(len(members))
    n_val, n_test = (int(np.floor(f * len(members) + 1e-9)) for f in fractions[1:])
    n_train = len(members) - n_val - n_test
    cut = members[order]
    return {
        "train": np.sort(cut[:n_train]),
        "val": np.sort(cut[n_train : n_train + n_val]),
        "test": np.sort(cut[n_train + n_val :]),
    }


@lru_cache(maxsize=16)
def _pairs(n: int, stays: bool = False) -> np.ndarray:
    """All (start, end) positions with start < end in a run of n snapshots, (n(n-1)/2, 2); with
    `stays` also start == end, (n(n+1)/2, 2)."""
    i, j = np.triu_indices(n, k=0 if stays else 1)
    return np.stack([i, j], 1)


class ZooTokens(Dataset):
    """Row index -> {"tokens" (T, D), "layer_ids" (T,), "cond": {...}} for selected zoo rows.

    Args:
        dataset: the zoo as a `datasets.Dataset` (memory-mapped).
        rows: row indices of this split.
        tokenizer: a fitted tokenizer.
        vocab: category -> sorted values (ids are positions).
        normalize: apply the tokenizer's fitted statistics.
        raw: items also carry "raw_tokens" (T, D), the un-normalised tokens (mask bits read exactly),
            and "entry_valid" (T, D) bool, the entries that hold a value of the member.
        cache_items: keep up to this many encoded rows in memory (per process; 0: none). Encoding
            is deterministic, and neuron alignment costs milliseconds per row (weight matching:
            ~4 ms for a 64-64-64-10 MLP), more than a small denoiser's step per item.
        cell: (rows of the dataset,) int64 cell id of every dataset row (items then carry
            "cell"), or None.
        teachers: (rows of the dataset,) int64: the row whose network teaches each row's function
            term (items then carry "teacher_tokens", a row's own tokens where it is -1), or None.
    """

    def __init__(
        self,
        dataset,
        rows: np.ndarray,
        tokenizer: Tokenizer,
        vocab: dict,
        normalize: bool = True,
        raw: bool = False,
        cache_items: int = 0,
        cell: np.ndarray | None = None,
        teachers: np.ndarray | None = None,
    ):
        self.dataset = dataset  # as load_zoo_dataset gives it: no indices mapping, rows by position
        self.teachers = teachers
        self.rows = np.asarray(rows, dtype=np.int64)
        self.tokenizer, self.vocab, self.normalize, self.raw = tokenizer, vocab, normalize, raw
        self.cache_items = cache_items
        self.cell = cell
        self._cache: dict[int, tuple] = {}
        self._table = None
        self._valid: dict[str, torch.Tensor] = {}  # structure -> (T, D) entry_valid

    def __getstate__(self) -> dict:
        # Workers re-map the Arrow files (never pickle columns) and fill their own caches.
        return {**self.__dict__, "_table": None, "_cache": {}}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def table(self) -> list:
        """[(name, column)] of the zoo's memory-mapped pyarrow Table, the columns an item needs."""
        if self._table is None:
            table = self.dataset.data.table
            self._table = [(name, table.column(name)) for name in ROW_COLUMNS]
        return self._table

    def row(self, index: int) -> dict:
        """One zoo row as a dict; tensor columns as numpy arrays (or None), read through Arrow."""
        out = {}
        for name, col in self.table:
            value = col[int(index)]  # a scalar view into the mapped file
            if name in TENSOR_COLUMNS:
                out[name] = value.values.to_numpy(zero_copy_only=False) if value.is_valid else None
            else:
                out[name] = value.as_py()
        return out

    def encode(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(tokens (T, D), layer ids (T,), conditions) of zoo row `index`."""
        return self._encode(index)[:3]

    def _encode(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """As `encode`, plus the raw_tokens / entry_valid extras when `raw` (cached, see cache_items)."""
        index = int(index)
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        out = self._encode_row(index)
        if len(self._cache) < self.cache_items:
            self._cache[index] = out
        return out

    def _encode_row(
        self, index: int, perm: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """As `_encode`, uncached; `perm`: the hidden-neuron order to encode in (Tokenizer.tokenize)."""
        row = self.row(index)
        raw, layout = self.tokenizer.tokenize(MemberTensors.from_row(row), perm)
        tokens = self.tokenizer.normalize(raw, layout) if self.normalize else raw
        extras = {}
        if self.raw:
            key = json.dumps([layout[k] for k in ("architecture", "arch_config", "present", "factor_shapes")])
            if key not in self._valid:
                self._valid[key] = valid_mask(layout)
            extras = {"raw_tokens": raw, "entry_valid": self._valid[key]}
        return tokens, self.tokenizer.layer_ids(layout), self.conditions(row), extras

    def conditions(self, row: dict) -> dict[str, np.generic]:
        """A row's conditions (mole.conditions, the pairs' start_* left to ZooPairs) as numpy scalars:
        continuous float32 (int64 for integer columns), categorical int64 ids into the vocabulary
        (default_collate stacks them into tensors)."""
        cond = {}
        for c in item_conditions():
            if c.kind == "categorical":
                cond[c.name] = np.int64(self.vocab[c.name].index(c.value(row)))
            else:
                cond[c.name] = (np.int64 if c.integer else np.float32)(c.value(row))
        return cond

    def cell_of(self, index: int) -> dict:
        """{"cell": the cell id of zoo row `index`} when cells are known, else {}."""
        return {} if self.cell is None else {"cell": np.int64(self.cell[int(index)])}

    def __getitem__(self, idx: int) -> dict:
        tokens, ids, cond, extras = self._encode(self.rows[idx])
        if self.teachers is not None:
            teacher = int(self.teachers[self.rows[idx]])
            extras = {**extras, "teacher_tokens": tokens if teacher < 0 else self._encode(teacher)[0]}
        return {
            "tokens": tokens,
            "layer_ids": ids,
            "cond": cond,
            **extras,
            **self.cell_of(self.rows[idx]),
        }


class ZooPairs(ZooTokens):
    """G.pt pairs: index -> a (start, end) pair of snapshots of one run (member_id), start before end
    unless reversed (`reverse`).

    Yields {"tokens": end (T, D), "start_tokens": start (T, D), "layer_ids", "cond"}, where cond is
    the end's conditions plus "start_test_loss" and "start_test_acc". With a canonical tokenizer the
    end is in its canonical neuron order and the start in the same one (the end's permutation), so
    the ends are as easy to generate as single checkpoints and a pair still keeps one neuron order;
    sampling puts a start in its own canonical order and the update back in the start's.

    With `fresh_starts` p > 0, a pair that starts at its run's init (step 0) starts instead, for a
    share p of the pair indices (fixed per index), at a fresh init of the same architecture and init
    scale (seed from the index, >= 2**32: never a zoo member's, nor the small seeds `--start_init`
    is given), with the run's init's measured conditions (every init's test loss is ~2.3). The
    training runs' few inits are then not the only ones an update learns to start from.

    With `stays`, every snapshot is also paired with itself (start == end, prompted with its own
    loss): without them an update never sees a start already at its prompt, since every later
    snapshot of a run has trained further, and iterated updates (G.pt's recursive prompting) keep
    moving past the prompt. A run of n snapshots then gives n(n+1)/2 pairs instead of n(n-1)/2.

    With `reverse` r > 0, a share r of the pair indices (fixed per index, never a stay) swap their
    ends: the later snapshot is the start and the earlier one the end, prompted with the earlier
    one's loss. G.pt pairs only forward in time, so every end it learns from has trained at least as
    long as its start: told a loss above its start's, an update has never seen one, and iterated
    updates are drawn towards ever more training. A reversed pair never starts at a fresh init (its
    start is a later snapshot). Without `reverse_init`, a pair whose earlier snapshot is its run's
    init (step 0) is never reversed, so no update learns to send a trained net back to an init.

    Args:
        runs: row indices of each run, sorted by step (runs with one snapshot have no pairs).
        fresh_starts: p above (never for a stay: its end is its start).
        stays: pair each snapshot with itself too.
        reverse: r above.
        reverse_init: whether a reversed pair may end at its run's init.
        others: as ZooTokens.
    """

    def __init__(
        self,
        dataset,
        runs: list[np.ndarray],
        tokenizer: Tokenizer,
        vocab: dict,
        normalize: bool = True,
        cache_items: int = 0,
        cell: np.ndarray | None = None,
        fresh_starts: float = 0.0,
        stays: bool = False,
        reverse: float = 0.0,
        reverse_init: bool = True,
    ):
        rows = np.concatenate(runs) if runs else np.zeros(0)
        super().__init__(dataset, rows, tokenizer, vocab, normalize, cache_items=cache_items, cell=cell)
        self.fresh_starts, self.stays = fresh_starts, stays
        self.reverse, self.reverse_init = reverse, reverse_init
        self.runs = runs
        self.offsets = np.cumsum([0] + [len(_pairs(len(r), stays)) for r in runs])
        self._perms: dict[int, dict] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def column(self, name: str, index: int):
        """One value of zoo row `index`."""
        return self.dataset.data.table.column(name)[int(index)].as_py()

    def fresh(self, idx: int) -> bool:
        """Whether pair `idx` draws a fresh init for a start at step 0 (a fixed share fresh_starts)."""
        return self.fresh_starts > 0 and fresh_seed(idx) % 10**6 < self.fresh_starts * 10**6

    def reversed_pair(self, idx: int) -> bool:
        """Whether pair `idx`, if not a stay, runs backward in time (a fixed share `reverse`, drawn
        apart from `fresh`)."""
        return self.reverse > 0 and _share_draw("reverse", idx) < self.reverse

    def positions(self, idx: int) -> tuple[int, int, int]:
        """(run, start position, end position) of pair `idx` in its run's snapshots."""
        run = int(np.searchsorted(self.offsets, idx, side="right")) - 1
        i, j = _pairs(len(self.runs[run]), self.stays)[idx - self.offsets[run]]
        back = i < j and self.reversed_pair(idx)
        if back and not self.reverse_init:
            back = self.column("step", self.runs[run][i]) != 0
        return (run, int(j), int(i)) if back else (run, int(i), int(j))

    def fresh_start(self, idx: int, init_row: int, perm: dict | None) -> torch.Tensor:
        """(T, D) tokens of pair `idx`'s fresh init: the init row's architecture and init scale."""
        like = MemberTensors.from_row(self.row(init_row))
        scale = self.column("init_scale", init_row)
        params = like.arch.init_stacked([fresh_seed(idx)], [1.0 if scale is None else scale])
        member = like.replace(params={n: p[0] for n, p in params.items()})
        raw, layout = self.tokenizer.tokenize(member, perm)
        return self.tokenizer.normalize(raw, layout) if self.normalize else raw

    def _encode_row(
        self, index: int, perm: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """As ZooTokens', but an end (no `perm` given) is encoded in its cached canonical order, so its
        weight matching runs once for both its own tokens and its starts'."""
        if perm is None and self.tokenizer.canonical:
            perm = self.order(index)
        return super()._encode_row(index, perm)

    def order(self, index: int) -> dict:
        """The canonical hidden-neuron permutations of zoo row `index` (cached: a run's end is the end
        of many pairs)."""
        index = int(index)
        if index not in self._perms:
            self._perms[index] = self.tokenizer.reorder(MemberTensors.from_row(self.row(index)).validate())[1]
        return self._perms[index]

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        run, i, j = self.positions(idx)
        end, ids, cond = self.encode(self.runs[run][j])
        first = self.runs[run][i]
        perm = self.order(self.runs[run][j]) if self.tokenizer.canonical else None  # the end's order
        if i < j and self.fresh(idx) and self.column("step", first) == 0:
            start, start_cond = self.fresh_start(idx, first, perm), self.conditions(self.row(first))
        elif perm is not None:  # the start in its end's neuron order: one order per pair
            start, _, start_cond, _ = self._encode_row(first, perm)
        else:
            start, _, start_cond = self.encode(first)
        for c in item_conditions(pairs=True):
            if c.start:  # the starting snapshot's value of the same column
                cond[c.name] = start_cond[c.column]
        out = {"tokens": end, "start_tokens": start, "layer_ids": ids, "cond": cond}
        return {**out, **self.cell_of(self.runs[run][j])}


def fresh_seed(idx: int) -> int:
    """The seed of pair `idx`'s fresh init: a hash of it, >= 2**32 (above every seed a zoo draws)."""
    return 2**32 + int.from_bytes(hashlib.sha256(f"fresh/{idx}".encode()).digest()[:6], "little")


def _share_draw(salt: str, idx: int) -> float:
    """A uniform draw in [0, 1) fixed by (salt, idx): which pairs fall in a share, independent of
    the other shares and of the worker or epoch that reads them."""
    return int.from_bytes(hashlib.sha256(f"{salt}/{idx}".encode()).digest()[:6], "little") / 2**48


def dense_parents(col: dict[str, np.ndarray], zoo_of: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(rows of the zoo,) int64: for each of `rows` that is pruned (PRUNED_VARIANTS), the row of its
    member's last dense snapshot (same zoo and member_index, the largest step) when that snapshot's
    validation accuracy is the higher; -1 for every other row (it teaches itself). Raises a one-line
    ConfigError naming the first pruned row with no dense parent."""
    out = np.full(len(zoo_of), -1, dtype=np.int64)
    dense = np.flatnonzero(col["variant"] == "dense")
    last: dict[tuple[int, int], int] = {}
    for i in dense[np.argsort(col["step"][dense], kind="stable")]:  # the latest step is kept
        last[(int(zoo_of[i]), int(col["member_index"][i]))] = int(i)
    for i in rows:
        if col["variant"][i] in PRUNED_VARIANTS:
            parent = last.get((int(zoo_of[i]), int(col["member_index"][i])))
            if parent is None:
                raise ConfigError(
                    "dense_teacher",
                    f"pruned member {str(col['member_id'][i])!r} has no dense snapshot in the zoo",
                )
            if col["val_acc"][parent] > col["val_acc"][i]:
                out[i] = parent
    return out


def collate(items: list[dict]) -> dict:
    """Stack items; token sequences of different T (e.g. low-rank factors of different ranks) are
    zero-padded to the longest, layer ids padded with -1, and "token_valid" (B, T) marks real tokens."""
    t_max = max(it["tokens"].shape[0] for it in items)
    out = {"token_valid": torch.stack([torch.arange(t_max) < it["tokens"].shape[0] for it in items])}
    for key in items[0]:
        values = [it[key] for it in items]
        if key in ("tokens", "start_tokens", "raw_tokens", "teacher_tokens"):
            out[key] = torch.stack([F.pad(v, (0, 0, 0, t_max - v.shape[0])) for v in values])  # (B, T, D)
        elif key == "entry_valid":
            out[key] = torch.stack([F.pad(v.float(), (0, 0, 0, t_max - v.shape[0])) > 0 for v in values])
        elif key == "layer_ids":
            out[key] = torch.stack([F.pad(v, (0, t_max - v.shape[0]), value=-1) for v in values])  # (B, T)
        else:
            out[key] = default_collate(values)
    return out


class ZooDataModule(L.LightningDataModule):
    """Tokens of a zoo's checkpoints (or G.pt pairs of them) with their conditions, split by member.

    Args:
        zoo: the zoo folder (only shards in its manifest are read), or a list of zoo folders read
            together (a mixed zoo: see the module docstring; members are split zoo by zoo).
        tokenizer: TOKENIZERS name, used when `tokenizer_dir` is None; fitted on the train split.
        tokenizer_options: options of that tokenizer (e.g. {"chunk_size": 64}).
        tokenizer_dir: a saved tokenizer (Tokenizer.save) to use as is instead.
        mode: "checkpoints" (one item per row) or "pairs" ((start, end) snapshots of one run).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        fractions: (train, val, test) fractions of the members.
        seed: seeds the member split and the train order.
        normalize: normalise tokens with the tokenizer's fitted statistics.
        fit_rows: at most this many train rows to fit the tokenizer on, spread over every
            (variant, config) so each structure is seen; None: all.
        cache_dir: `datasets` cache for the Arrow files (None: its default).
        variants: keep only rows of these variants (None: all; for target "mask": MASK_VARIANTS).
        target: the rows' use: "weights" (default; mole.diffusion.system.DiffusionSystem) or "mask"
            (supermask rows for mole.masks.system.MaskSystem: items then also carry "raw_tokens" and
            "entry_valid" (see ZooTokens), and the tokenizer must give token space to masks and
            inits). Vocabularies and splits are those of the whole zoo either way.
        cache_items: encoded rows each split keeps in memory (per process), 0: none; a few KB each.
        balance: "test_acc" or "test_loss": draw train rows (with replacement, an epoch's worth)
            weighted by `balance_weights` of that column, so sparse parts of its range are seen more;
            "cell": each cell of a mixed zoo equally often, whatever its rows;
            None: every row once per epoch, shuffled.
        fresh_starts: pairs mode: the share of training pairs starting at a run's init that start at
            a fresh init instead (ZooPairs); 0: none.
        stay_pairs: pairs mode: training pairs also pair each snapshot with itself, so an update
            learns to stay at a start already at its prompt (ZooPairs). On B9's recipe it ended the
            overshoot of iterated updates on two seeds but broke the lowest prompt on one
            (docs/results.md L26, L27): off there.
        reverse_pairs: pairs mode: the share of training pairs that run backward in time, from the
            later snapshot to the earlier one (ZooPairs), so an update also learns to reach a loss
            above its start's; 0: none, as G.pt. On B9's recipes a quarter made mid-training starts
            follow their prompts far better, but sent good starts back nearer a training member
            (docs/results.md L39): off there.
        reverse_to_init: pairs mode, with reverse_pairs: whether a reversed pair may end at its run's
            init (step 0); False keeps every pair from a run's init forward, so an update never
            learns to send a trained net back to an init.
        dense_teacher: checkpoints mode: a pruned row (PRUNED_VARIANTS) whose dense parent, its
            member's last dense snapshot in the zoo, has the higher validation accuracy is taught by
            that parent: the function-space term scores the row's x0 prediction against the parent's
            outputs instead of its own (items carry "teacher_tokens"), as pruning with distillation
            does, so a draw told a sparsity learns the dense net's function rather than a damaged
            copy's (one-shot magnitude pruning). A row better than its parent (IMP retrained after
            rewinding often is) keeps its own. A pruned row without a dense parent in the zoo is a
            one-line error.
    """

    def __init__(
        self,
        zoo: str | list[str],
        tokenizer: str = "neuron",
        tokenizer_options: dict | None = None,
        tokenizer_dir: str | None = None,
        mode: str = "checkpoints",
        batch_size: int = 64,
        num_workers: int = 0,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        normalize: bool = True,
        fit_rows: int | None = 2048,
        cache_dir: str | None = None,
        variants: list[str] | None = None,
        target: str = "weights",
        cache_items: int = 20000,
        balance: str | None = None,
        fresh_starts: float = 0.0,
        stay_pairs: bool = False,
        reverse_pairs: float = 0.0,
        reverse_to_init: bool = True,
        dense_teacher: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        if stay_pairs and mode != "pairs":
            raise ConfigError("stay_pairs", "pairs a snapshot with itself: it needs mode pairs")
        self.stay_pairs = stay_pairs
        if isinstance(reverse_pairs, bool) or not 0.0 <= reverse_pairs <= 1.0:
            raise ConfigError("reverse_pairs", f"must be a share in [0, 1], got {reverse_pairs}")
        if reverse_pairs and mode != "pairs":
            raise ConfigError("reverse_pairs", "reverses pairs: it needs mode pairs")
        self.reverse_pairs, self.reverse_to_init = reverse_pairs, reverse_to_init
        if not 0.0 <= fresh_starts <= 1.0:
            raise ConfigError("fresh_starts", f"must be a share in [0, 1], got {fresh_starts}")
        if fresh_starts and mode != "pairs":
            raise ConfigError("fresh_starts", "replaces starts of pairs: it needs mode pairs")
        self.fresh_starts = fresh_starts
        if dense_teacher and (mode != "checkpoints" or target != "weights"):
            raise ConfigError(
                "dense_teacher", "teaches single weight checkpoints: use mode checkpoints, target weights"
            )
        self.dense_teacher = dense_teacher
        check_choice(mode, MODES, "mode")
        check_choice(target, TARGETS, "target")
        if target == "mask" and mode != "checkpoints":
            raise ConfigError("target", "mask is learned from single checkpoints: use mode checkpoints")
        self.target = target
        self.variants = (
            list(variants) if variants is not None else (MASK_VARIANTS if target == "mask" else None)
        )
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(
                "fractions", f"need three non-negative fractions summing to 1, got {list(fractions)}"
            )
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be positive, got {batch_size}")
        if not isinstance(zoo, (str, Path)) and not zoo:
            raise ConfigError("zoo", "an empty list of zoos")
        self.zoos = [Path(zoo)] if isinstance(zoo, (str, Path)) else [Path(z) for z in zoo]
        # one folder as given; a mixed zoo as its list (mole.json's "zoo")
        self.zoo: Path | list[Path] = self.zoos[0] if isinstance(zoo, (str, Path)) else list(self.zoos)
        self.mode, self.batch_size, self.num_workers = mode, batch_size, num_workers
        self.fractions, self.seed, self.normalize, self.fit_rows = tuple(fractions), seed, normalize, fit_rows
        self.cache_dir = cache_dir
        if cache_items < 0:
            raise ConfigError("cache_items", f"must be >= 0, got {cache_items}")
        self.cache_items = cache_items
        if balance is not None:
            check_choice(balance, BALANCE, "balance")
        if balance is not None and mode != "checkpoints":
            raise ConfigError("balance", "draws single checkpoints: use mode checkpoints")
        self.balance = balance
        self.train_weights: torch.Tensor | None = None  # (rows,) draw weights of the train split
        self.tokenizer: Tokenizer = (
            Tokenizer.from_dir(tokenizer_dir)
            if tokenizer_dir
            else build_tokenizer(tokenizer, **(tokenizer_options or {}))
        )
        self.datasets: dict[str, ZooTokens] | None = None
        self.splits: dict[str, np.ndarray] = {}  # member indices; (n, 2) [zoo, member] of a mixed zoo
        self.vocab: dict[str, list[str]] = {}
        # the (architecture, arch_config, task, task_options) of the kept rows, with their variants
        self.cells: list[dict] = []

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Convert the zoo's Parquet shards into the `datasets` Arrow cache once (Lightning runs this
        on one process; the conversion holds whole row groups in memory, streaming does not)."""
        for zoo in self.zoos:
            load_zoo_dataset(zoo, cache_dir=self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Open the zoo, split members, build the vocabulary, fit the tokenizer if needed (idempotent)."""
        if self.datasets is not None:
            return
        parts = [load_zoo_dataset(z, cache_dir=self.cache_dir) for z in self.zoos]
        ds = parts[0] if len(parts) == 1 else load_zoo_dataset(self.zoos, cache_dir=self.cache_dir)
        col = {
            c: ds.data.column(c).to_numpy(zero_copy_only=False)
            for c in ("member_index", "member_id", "step", "variant", "val_acc", *CELL_COLUMNS)
        }
        self.vocab = {c: sorted(set(ds.data.column(c).to_pylist())) for c in CATEGORICAL}
        zoo_of = np.repeat(np.arange(len(parts)), [len(p) for p in parts])  # (rows,) which zoo
        rows = self._split(col["member_index"], zoo_of)
        if self.variants is not None:
            unknown = sorted(set(self.variants) - set(self.vocab["variant"]))
            if unknown:
                raise ConfigError("variants", f"{unknown} not in this zoo; it holds {self.vocab['variant']}")
            rows = {s: r[np.isin(col["variant"][r], self.variants)] for s, r in rows.items()}
        cell = self._cells(col, np.sort(np.concatenate(list(rows.values()))))
        if self.target == "mask" and len(self.cells) > 1:  # one channel layout, one frozen-init family
            raise ConfigError(
                "target", f"mask learns one architecture and task, these rows hold {len(self.cells)}"
            )
        for s in self.cells:
            self.tokenizer.check_architecture(s["architecture"], s["arch_config"], "tokenizer")
        if self.tokenizer.stats is None:
            reader = ZooTokens(ds, rows["train"], self.tokenizer, self.vocab, normalize=False)
            picked = self._fit_sample(ds, rows["train"], cell)
            self.tokenizer.fit(MemberTensors.from_row(reader.row(i)) for i in picked)
        if self.target == "mask" and not {"mask", "init_params"} <= set(self.tokenizer.fields or []):
            raise ConfigError(
                "target",
                f"mask needs rows with masks over frozen inits; the tokenizer's fields are "
                f"{self.tokenizer.fields} (variants {self.variants})",
            )
        if self.balance == "cell":
            mine = cell[rows["train"]]
            self.train_weights = torch.from_numpy(1.0 / np.bincount(mine)[mine])
        elif self.balance is not None:
            self.train_weights = balance_weights(ds.data.column(self.balance).to_numpy()[rows["train"]])
        teachers = (
            dense_parents(col, zoo_of, np.concatenate(list(rows.values()))) if self.dense_teacher else None
        )
        self.datasets = {}
        for split, r in rows.items():
            if self.mode == "checkpoints":
                self.datasets[split] = ZooTokens(
                    ds, r, self.tokenizer, self.vocab, self.normalize, self.target == "mask", self.cache_items,
                    cell, teachers,
                )  # fmt: skip
            else:
                self.datasets[split] = ZooPairs(
                    ds, self._runs(col, r), self.tokenizer, self.vocab, self.normalize, self.cache_items,
                    cell, self.fresh_starts if split == "train" else 0.0,
                    self.stay_pairs and split == "train", self.reverse_pairs if split == "train" else 0.0,
                    self.reverse_to_init,
                )  # fmt: skip

    def _split(self, member_index: np.ndarray, zoo_of: np.ndarray) -> dict[str, np.ndarray]:
        """Split members zoo by zoo (sets self.splits); the rows of each split."""
        if len(self.zoos) == 1:
            self.splits = split_members(np.unique(member_index), self.fractions, self.seed)
            return {s: np.flatnonzero(np.isin(member_index, m)) for s, m in self.splits.items()}
        rows = {s: [] for s in ("train", "val", "test")}
        pairs = {s: [] for s in rows}
        for z in range(len(self.zoos)):
            mine = zoo_of == z
            for s, m in split_members(np.unique(member_index[mine]), self.fractions, self.seed).items():
                rows[s].append(np.flatnonzero(mine & np.isin(member_index, m)))
                pairs[s].append(np.stack([np.full(len(m), z), m], 1))  # (n, 2) [zoo, member]
        self.splits = {s: np.concatenate(p).astype(np.int64) for s, p in pairs.items()}
        return {s: np.concatenate(r) for s, r in rows.items()}

    def _cells(self, col: dict, kept: np.ndarray) -> np.ndarray:
        """Set self.cells from the kept rows; (rows,) each row's cell id (-1: not kept)."""
        keys = np.array(["\0".join(str(col[c][r]) for c in CELL_COLUMNS) for r in kept], dtype=object)
        unique, inverse = np.unique(keys, return_inverse=True) if len(kept) else (np.array([]), np.array([]))
        self.cells = []
        for i, key in enumerate(unique):
            arch, options, task, task_options = key.split("\0")
            variants = sorted(set(col["variant"][kept[inverse == i]]))
            self.cells.append(
                {
                    "architecture": arch,
                    "arch_config": json.loads(options),
                    "task": task,
                    "task_options": json.loads(task_options) if task_options else {},
                    "variants": [str(v) for v in variants],
                }
            )
        cell = np.full(len(col["variant"]), -1, dtype=np.int64)
        cell[kept] = inverse
        return cell

    def _fit_sample(self, ds, rows: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """Evenly spaced train rows, an equal share from each (variant, variant_config, cell)."""
        if len(rows) == 0:
            raise ConfigError("fractions", "the train split holds no member to fit the tokenizer on")
        if self.fit_rows is None:
            return rows
        variant = ds.data.column("variant").to_numpy(zero_copy_only=False)[rows]
        config = ds.data.column("variant_config").to_numpy(zero_copy_only=False)[rows]
        keys = np.char.add(np.char.add(variant.astype(str), config.astype(str)), cell[rows].astype(str))
        groups = [rows[keys == k] for k in np.unique(keys)]
        share = max(1, self.fit_rows // len(groups))
        picked = [g[np.unique(np.linspace(0, len(g) - 1, min(share, len(g))).astype(int))] for g in groups]
        return np.sort(np.concatenate(picked))

    @staticmethod
    def _runs(col: dict, rows: np.ndarray) -> list[np.ndarray]:
        """Rows of each run (member_id), sorted by step; runs in first-appearance order."""
        ids, steps = col["member_id"][rows], col["step"][rows]
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        runs = []
        for k in np.argsort(first):
            r = rows[inverse == k]
            runs.append(r[np.argsort(steps[inverse == k], kind="stable")])
        return runs

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.datasets is None:
            self.setup()
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        sampler = None
        if split == "train" and self.train_weights is not None:  # `balance`: drawn by weight instead
            sampler = WeightedRandomSampler(self.train_weights, len(self.train_weights), generator=generator)
            shuffle, generator = False, None
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Vocabulary and member split (stored in Lightning checkpoints; a mixed zoo's split as
        [zoo, member] pairs)."""
        return {"vocab": self.vocab, "splits": {s: m.tolist() for s, m in self.splits.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Check a checkpoint's vocabulary and split against this zoo's: ids must mean the same."""
        self.setup()
        for key, mine in self.state_dict().items():
            if state.get(key) != mine:
                raise ConfigError(
                    key, f"the checkpoint's {key} differs from this zoo's (another zoo or seed?)"
                )

    def save(self, path: str | Path) -> Path:
        """Write the fitted tokenizer (path/tokenizer) and the vocabulary + splits (path/datamodule.json)."""
        path = Path(path)
        self.tokenizer.save(path / "tokenizer")
        write_json(
            path / "datamodule.json",
            {**self.state_dict(), "fractions": list(self.fractions), "seed": self.seed},
        )
        return path


def balance_weights(values: np.ndarray, bins: int = BALANCE_BINS) -> torch.Tensor:
    """Draw weights (n,) that even out a condition's histogram: each row 1 / sqrt(rows in its bin), of
    `bins` equal bins over the values' range, so a bin of c rows is drawn in proportion to sqrt(c).

    A zoo's trajectories pile up at their end (on digits only 7% of the dense snapshots lie between 0.2
    and 0.8 test accuracy), and a denoiser learns the sparse middle of the range least.
    The square root (not full inverse frequency) keeps the crowded, best bins drawn most."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return torch.zeros(0, dtype=torch.float64)
    lo, hi = values.min(), values.max()
    which = np.minimum(((values - lo) / max(hi - lo, 1e-12) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    return torch.from_numpy(1.0 / np.sqrt(counts[which]))
