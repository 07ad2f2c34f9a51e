"""Training the MaskRefiner across frozen random inits: many inits, three distributions, three sparsities.

Inits come from three disjoint seed streams, so that no evaluation init is ever a training init: a
stream's seeds are 3 * i + its index ("train" 0, "val" 1, "test" 2), so they differ modulo 3.
Training draws a pool of `pool` training inits (init distribution and sparsity round-robin over every
combination) and their construction scores once (cheaper than redrawing them every step: the
construction is most of a step), then takes `batch` of them per step. The loss is the masked
networks' cross-entropy on a fresh batch of training examples after every refinement step, through
the straight-through top-k. The gradient features are taken on other examples (the construction's
data), so a correction cannot just copy the loss batch's own gradient.

Per condition (sparsity level x init family) the refiner keeps the checkpoint with the best mean
validation accuracy (the task's validation split) over that condition's share of `val` held-out
inits, counting the untrained model (the fixed gradient-step rule, or with step_size 0 the
construction itself) as a candidate: the refiner is never worse than it on validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mole.data import TaskData
from mole.errors import ConfigError
from mole.masks.construction import DEFAULTS as CONSTRUCTION
from mole.masks.construction import least_squares_scores, prior_data
from mole.masks.refiner import MaskProblem, MaskRefiner, mask_logits, refine, refinements
from mole.nets import Architecture, Params
from mole.zoo.pruning import topk_straight_through
from mole.zoo.variants.supermask import INITS, frozen_init

STREAMS = ("train", "val", "test")
SPARSITIES = (0.5, 0.8, 0.9)


def init_seeds(stream: str, num: int, start: int = 0) -> list[int]:
    """Seeds of inits start .. start + num - 1 of a stream (disjoint across streams: seed % 3)."""
    if stream not in STREAMS:
        raise ConfigError("stream", f"unknown init stream {stream!r}; valid: {', '.join(STREAMS)}")
    k = STREAMS.index(stream)
    return [3 * (start + i) + k for i in range(num)]


@dataclass(frozen=True)
class Draw:
    """Stacked frozen inits with what they were drawn as.

    Args:
        init: {name: (B, *shape)} the weights (biases zero).
        sparsity: (B,) fraction of each weight tensor to remove.
        dists: (B,) init distribution names; seeds: (B,) init seeds.
    """

    init: Params
    sparsity: torch.Tensor
    dists: list[str]
    seeds: list[int]


def draw(
    arch: Architecture,
    stream: str,
    num: int,
    dists: Sequence[str],
    sparsities: Sequence[float],
    start: int = 0,
) -> Draw:
    """`num` inits of a stream, round-robin over every (distribution, sparsity) pair."""
    pairs = list(itertools.product(dists, sparsities))
    seeds = init_seeds(stream, num, start)
    chosen = [pairs[i % len(pairs)] for i in range(num)]
    parts = [frozen_init(arch, [s], d) for s, (d, _) in zip(seeds, chosen)]
    init = {n: torch.cat([p[n] for p in parts]) for n in parts[0]}
    return Draw(init, torch.tensor([s for _, s in chosen]), [d for d, _ in chosen], seeds)


def masked_accuracy(
    arch: Architecture, init: Params, masks: Params, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """(B,) accuracy of each masked net on (x, y)."""
    params = {n: p * masks[n] if n in masks else p for n, p in init.items()}
    with torch.no_grad():
        return (arch.forward_stacked(params, x).argmax(-1) == y).float().mean(1)


@dataclass
class RefinerTraining:
    """How to train a MaskRefiner across inits.

    Args:
        steps: optimizer steps.
        batch: inits per step.
        pool: training inits (and their construction scores) drawn once; a multiple of the number of
            (distribution, sparsity) pairs, each pair equally often in a batch.
        val: held-out validation inits.
        val_every: validate every this many steps (and before the first).
        lr: AdamW learning rate.
        inputs: examples the construction and the gradient features use (the construction's data).
        loss_inputs: training examples per step the loss is taken on.
        dists, sparsities: what the inits are drawn as.
        construction: the construction's options (ridge, passes).
        seed: the loss batches' draw.
        distill: weight of the teacher term when a teacher is given (train_refiner): the binary
            cross-entropy of the final step's scores (`mask_logits`) against the teacher's masks.
        decay: anneal the learning rate to zero over the steps (cosine).
        clip: clip the gradient's global norm to this before each step (0: no clipping).
    """

    steps: int = 100
    batch: int = 9
    pool: int = 252
    val: int = 72
    val_every: int = 10
    lr: float = 1e-3
    inputs: int = CONSTRUCTION["inputs"]
    loss_inputs: int = 256
    dists: tuple[str, ...] = INITS
    sparsities: tuple[float, ...] = SPARSITIES
    construction: dict = field(
        default_factory=lambda: {"ridge": CONSTRUCTION["ridge"], "passes": CONSTRUCTION["passes"]}
    )
    seed: int = 0
    distill: float = 1.0
    decay: bool = False
    clip: float = 0.0


def in_chunks(d: Draw, chunk: int, part: Callable[[slice], Params]) -> Params:
    """part(nets) for the draw's nets `chunk` at a time, concatenated along the nets."""
    parts = [part(slice(lo, lo + chunk)) for lo in range(0, len(d.seeds), chunk)]
    return {n: torch.cat([p[n] for p in parts]) for n in parts[0]}


def construction_scores(
    arch: Architecture, d: Draw, x: torch.Tensor, y: torch.Tensor, options: dict, chunk: int = 32
) -> Params:
    """The construction's raw scores of every init of a draw, `chunk` nets at a time."""
    return in_chunks(
        d,
        chunk,
        lambda nets: least_squares_scores(arch, sliced(d.init, nets), x, y, d.sparsity[nets], **options),
    )


def teacher_masks(
    teacher: MaskRefiner, arch: Architecture, d: Draw, scores: Params, x, y, chunk: int = 32
) -> Params:
    """{weight name: (B, *shape)} the float {0, 1} masks a teacher refiner gives a draw's inits (each
    net's kept MLP), `chunk` nets at a time."""

    def masks(nets: slice) -> Params:
        p = MaskProblem(arch, sliced(d.init, nets), sliced(scores, nets), d.sparsity[nets], x, y)
        return {n: topk_straight_through(v, p.sparsity) for n, v in refine(teacher, p).items()}

    with torch.no_grad():
        return in_chunks(d, chunk, masks)


def sliced(params: Params, nets: slice) -> Params:
    """The nets `nets` of stacked tensors."""
    return {n: v[nets] for n, v in params.items()}


def evaluate(
    model: MaskRefiner,
    arch: Architecture,
    d: Draw,
    scores: Params,
    x,
    y,
    x_eval,
    y_eval,
    training: bool = False,
) -> torch.Tensor:
    """(B,) accuracy on (x_eval, y_eval) of the refined masks of a draw (`training`: with the MLP
    being trained for every net, else each net's kept one)."""
    with torch.no_grad():
        s = refine(model, MaskProblem(arch, d.init, scores, d.sparsity, x, y), training)
        masks = {n: topk_straight_through(v, d.sparsity) for n, v in s.items()}
    return masked_accuracy(arch, d.init, masks, x_eval, y_eval)


def train_refiner(
    model: MaskRefiner,
    arch: Architecture,
    data: TaskData,
    options: RefinerTraining | None = None,
    log: Callable[[dict], None] | None = None,
    teacher: MaskRefiner | None = None,
) -> tuple[MaskRefiner, list[dict]]:
    """Train `model` across inits (module docstring); returns (it, with the best checkpoint on
    validation kept per condition, and the history).

    Args:
        model: the refiner (its steps and width are its own).
        arch: the MLP or CNN the masks are for.
        data: the task; training examples drive the construction, the features and the loss, the
            validation split picks the kept model.
        options: see RefinerTraining.
        log: called with each history entry ({"step", "val_acc", "kept_for"[, "loss", "grad_norm"]}: the
            trained MLP's mean validation accuracy, the conditions it was kept for at that step, and the
            step's training loss and gradient norm before clipping).
        teacher: a refiner (typically of many steps) whose masks of the training inits `model` is
            also fitted to: `options.distill` x the binary cross-entropy of the final step's scores
            against the teacher's mask bits, beside the function loss. Distillation gives a model of
            few steps a target per weight, where the loss alone gives one per net.
    """
    o = options or RefinerTraining()
    if o.pool % (len(o.dists) * len(o.sparsities)):
        raise ConfigError(
            "pool", f"{o.pool} is not a multiple of the {len(o.dists) * len(o.sparsities)} init pairs"
        )
    x, y = prior_data(data, o.inputs)
    pool = draw(arch, "train", o.pool, o.dists, o.sparsities)
    pool_scores = construction_scores(arch, pool, x, y, o.construction)
    targets = None if teacher is None else teacher_masks(teacher, arch, pool, pool_scores, x, y)
    val = draw(arch, "val", o.val, o.dists, o.sparsities)
    val_scores = construction_scores(arch, val, x, y, o.construction)
    optimizer = torch.optim.AdamW(model.mlp.parameters(), lr=o.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, o.steps) if o.decay else None
    g = torch.Generator().manual_seed(o.seed)
    history: list[dict] = []

    conditions = model.condition(val.init, val.sparsity)  # (val,) each val init's kept MLP
    best = {c: -1.0 for c in conditions.unique().tolist()}

    def validate(step: int, loss: float | None, norm: float | None = None) -> None:
        """Validate the MLP being trained; keep it for every condition it does best on so far."""
        model.eval()
        acc = evaluate(model, arch, val, val_scores, x, y, data.x_val, data.y_val, training=True)
        model.train()
        kept = []
        for c in best:
            a = float(acc[conditions == c].mean())
            if a > best[c]:
                best[c] = a
                model.kept[c].load_state_dict(model.mlp.state_dict())
                kept.append(c)
        entry = {"step": step, "val_acc": float(acc.mean()), "kept_for": kept}
        history.append(entry if loss is None else {**entry, "loss": loss, "grad_norm": norm})
        if log is not None:
            log(history[-1])

    validate(0, None)  # the zero correction (the construction) is a candidate for every condition
    for step in range(1, o.steps + 1):
        # every (distribution, sparsity) pair alike: the pool holds pair i % pairs at index i
        pairs = len(o.dists) * len(o.sparsities)
        pair = torch.arange(o.batch) % pairs
        pick = pair + pairs * torch.randint(o.pool // pairs, (o.batch,), generator=g)
        init = {n: p[pick] for n, p in pool.init.items()}
        scores = {n: p[pick] for n, p in pool_scores.items()}
        sparsity = pool.sparsity[pick]
        rows = torch.randint(len(data.x_train), (o.loss_inputs,), generator=g)
        xb, yb = data.x_train[rows], data.y_train[rows]
        losses = []
        batch = MaskProblem(arch, init, scores, sparsity, x, y)
        for s in refinements(model, batch, training=True):  # loss after every step
            masks = {n: topk_straight_through(v, sparsity) for n, v in s.items()}
            logits = arch.forward_stacked({n: p * masks[n] if n in masks else p for n, p in init.items()}, xb)
            losses.append(F.cross_entropy(logits.flatten(0, 1), yb.repeat(len(pick))))
        loss = torch.stack(losses).mean()
        if targets is not None:  # the last step's scores against the teacher's masks, tensor by tensor
            bce = [
                F.binary_cross_entropy_with_logits(mask_logits(v, masks[n]), targets[n][pick])
                for n, v in s.items()
            ]
            loss = loss + o.distill * torch.stack(bce).mean()
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.mlp.parameters(), o.clip if o.clip > 0 else float("inf"))
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if step % o.val_every == 0 or step == o.steps:
            validate(step, float(loss.detach()), float(norm))
    return model, history
