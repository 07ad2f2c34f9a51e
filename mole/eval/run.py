"""Evaluate zoo folders into a report: `evaluate_zoos` (what `mole eval` runs) and `write_report`.

`write_report` runs the evaluators on every set of a ReportInputs (mole.eval.inputs), computes the
benchmark figures (mole.eval.benchmarks) and has the section functions (mole.eval.report) render
OUT/report.md and OUT/plots/*.png; it writes OUT/results.json and logs to W&B. `evaluate_zoos` reads
any zoo folders into a ReportInputs; `mole quickstart` maps its own folders onto one
(mole.pipeline.report_from_run), so both reports come from the same functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from mole.data import load_task
from mole.errors import ConfigError
from mole.eval import EvalSet, evaluate
from mole.eval import benchmarks as bench
from mole.eval import report as sections
from mole.eval.base import Row, json_column, prompt_of
from mole.eval.inputs import (
    ROLES,
    ReportInputs,
    ZooSet,
    architectures,
    check_architectures,
    check_same_task,
    load_theory,
    read_folder,
    role_of,
    split_baselines,
    task_of,
    unique_names,
)
from mole.eval.memorization import baseline_nets, memorization_test
from mole.eval.report import Lines
from mole.progress import StageProgress
from mole.zoo.store import atomic_path, write_json

WANDB_MODES = ("offline", "online", "disabled")
DENSE_EVALUATORS = {"accuracy": {}, "novelty": {}, "diversity": {}, "constraints": {}}


class Evaluation:
    """One report's evaluation: its inputs, the evaluator rows (results.json "evaluations") and the
    benchmark figures (results.json "benchmarks"). Each evaluator runs at most once per set label, so
    a zoo in several roles is evaluated once.

    Args:
        inputs: the sets in their roles.
        out: the report's folder.
    """

    def __init__(self, inputs: ReportInputs, out: Path):
        self.inputs, self.out, self.plots = inputs, out, out / "plots"
        self.sgd = inputs.sgd
        self.accuracy = inputs.accuracy if self.sgd else []  # B2 / B4 need SGD members
        self.rows: list[dict] = []
        self.figures: dict[str, float] = {}
        self.memorization: dict[str, dict] = {}  # results.json "memorization": zoo name -> B4's details
        self.done: set[tuple[str, str]] = set()

    def run(self, label: str, members: Sequence[Row], evaluators: Mapping[str, Mapping[str, Any]],
            reference: Sequence[Row] | None = None) -> dict[str, float]:  # fmt: skip
        """Run the evaluators not yet run on set `label`; returns every metric of that set so far."""
        todo = {name: opts for name, opts in evaluators.items() if (label, name) not in self.done}
        if todo:
            ref = None if reference is None else list(reference)
            self.rows.extend(evaluate(EvalSet(list(members), ref, self.inputs.data, label), todo))
            self.done.update((label, name) for name in todo)
        return {r["metric"]: r["value"] for r in self.rows if r["set"] == label}

    def figure(self, key: str, s: ZooSet, sets: Sequence[ZooSet], value: float) -> None:
        """Record a figure: keyed plain for its section's only zoo, "<key>/<zoo>" for several."""
        self.figures[key if len(sets) == 1 else f"{key}/{s.name}"] = value

    def note(self, section: str) -> str | None:
        return self.inputs.notes.get(section)


# ---------------------------------------------------------------------------- one function per part
def dense_part(e: Evaluation) -> Lines:
    """B2 (and B4's figure): dense zoos against the SGD members, with the temperature table."""
    for s in e.inputs.accuracy if not e.sgd else []:  # no SGD members: accuracy and constraints only
        e.run(s.label, s.rows, {"accuracy": {}, "constraints": {}})
    if not e.accuracy:
        return []
    dense = {s.name: e.run(s.label, s.rows, DENSE_EVALUATORS, e.sgd) for s in e.accuracy}
    e.run("sgd/dense", e.sgd, {"accuracy": {}})
    for s in e.accuracy:
        ratio = bench.acc_ratio(s.rows, e.sgd)
        e.figure("acc_ratio", s, e.accuracy, ratio)
        e.figure("frac_novel", s, e.accuracy, bench.share_novel(dense[s.name]["frac_novel"], ratio))
        e.figure("frac_novel_raw", s, e.accuracy, dense[s.name]["frac_novel"])
    lines = sections.accuracy_section({s.name: s.rows for s in e.accuracy}, e.sgd, e.note("accuracy"))
    named = len(e.accuracy) > 1
    entries = [(s.name if named else None, s.temperature, dense[s.name]) for s in e.accuracy]
    for s in e.inputs.temperatures:
        m = e.run(s.label, s.rows, {"accuracy": {}, "novelty": {"matched_k": 0}, "diversity": {}}, e.sgd)
        entries.append((None, s.temperature, m))
    if any(t != 1.0 for _, t, _ in entries):
        lines += sections.temperature_section(entries, e.note("temperature"))
    return lines


def prompt_part(e: Evaluation) -> Lines:
    """B3: prompted against achieved accuracy, per prompt zoo."""
    if not e.inputs.prompts:
        return []
    b3 = {}
    for s in e.inputs.prompts:
        e.run(s.label, s.rows, {"prompt_alignment": {"conditions": ["test_acc"]}, "accuracy": {}})
        b3[s.name] = (s.rows, bench.prompt_alignment(s.rows))
        e.figure("spearman_prompt", s, e.inputs.prompts, b3[s.name][1]["spearman"])
    zoo = [r for r in e.inputs.reference if r["variant"] == "dense"]  # every snapshot
    spread = bench.accs(zoo) if zoo else [prompt_of(r)["test_acc"] for s in e.inputs.prompts for r in s.rows]
    return sections.prompt_section(b3, (float(min(spread)), float(max(spread))), e.plots, e.note("prompts"))


def novelty_part(e: Evaluation) -> Lines:
    """B4's weight side: novelty and diversity of the dense zoos (evaluated in `dense_part`)."""
    if not e.accuracy:
        return []
    return sections.novelty_section({s.name: e.run(s.label, s.rows, {}) for s in e.accuracy})


def memorization_part(e: Evaluation) -> Lines:
    """B4: Zeng et al.'s memorization test of each dense zoo against the final SGD members and the
    noise / interpolation baselines made from them (mole.eval.memorization)."""
    if not e.accuracy:
        return []
    e.run("sgd/dense", e.sgd, {"misprediction_iou": {"leave_one_out": True}}, e.sgd)
    members = EvalSet(e.sgd).tensors()
    baselines = baseline_nets(members)
    tests = {}
    for s in e.accuracy:
        e.run(s.label, s.rows, {"misprediction_iou": {}}, e.sgd)
        t = memorization_test(EvalSet(s.rows).tensors(), members, e.inputs.data, baselines)
        parts = bench.memorization_parts(t)
        figures = {"memorization_parts_met": bench.share_parts_met(parts), "max_iou_median": t.novelty,
                   "max_iou_median_sgd": t.novelty_sgd, "pairwise_iou_median": t.diversity,
                   "pairwise_iou_median_sgd": t.diversity_sgd, "frontier_margin": t.margin,
                   "frontier_margin_low": t.margin_low, "frontier_margin_high": t.margin_high}  # fmt: skip
        for key, value in figures.items():
            e.figure(key, s, e.accuracy, value)
        tests[s.name] = (t, parts)
        e.memorization[s.name] = sections.memorization_record(t, parts)
    return sections.memorization_section(tests, e.plots)


def sparse_part(e: Evaluation) -> Lines:
    """B5: sparse zoos against the pruning baselines (the figure only where there are baselines)."""
    if not e.inputs.sparse:
        return []
    pruning, levels = e.inputs.pruning, {}
    for s in e.inputs.sparse:
        e.run(s.label, s.rows, {"accuracy": {"by": "sparsity"}, "constraints": {}})
        levels[s.name] = (s.rows, bench.sparse_levels(bench.sparsity_curves(s.rows, pruning)))
        if pruning:
            e.figure("sparse_vs_baselines_met", s, e.inputs.sparse, bench.share_levels_met(levels[s.name][1]))
    for name in bench.PRUNING:
        rows = [r for r in pruning if r["variant"] == name]
        if rows:
            e.run(f"baseline/{name}", rows, {"accuracy": {"by": "sparsity"}})
    return sections.sparse_section(levels, pruning, e.plots, e.note("pruned"))


def mask_part(e: Evaluation) -> Lines:
    """B6: mask zoos against edge-popup and the construction on the same inits (each figure only where
    some pair): the ratio to edge-popup, and the points gained over the construction."""
    if not e.inputs.masks:
        return []
    popup, built, paired = e.inputs.edge_popup, e.inputs.construction, {}
    for s in e.inputs.masks:
        e.run(s.label, s.rows, {"accuracy": {}, "constraints": {}})
        paired[s.name] = (s.rows, bench.same_inits(s.rows, popup), bench.same_inits(s.rows, built))
        if paired[s.name][1]:
            e.figure("mask_ratio_edge_popup", s, e.inputs.masks, bench.mask_ratio(s.rows, popup))
        if paired[s.name][2]:
            e.figure("mask_gain_construction", s, e.inputs.masks, bench.mask_gain(s.rows, built))
    if popup:
        e.run("baseline/edge_popup", popup, {"accuracy": {}})
    if built:
        e.run("baseline/lsq_supermask", built, {"accuracy": {}})
    return sections.mask_section(paired, e.plots, e.note("masks"))


def constraints_part(e: Evaluation) -> Lines:
    """Constraints met by every generated zoo but the prompt sweeps and temperature sets."""
    for s in e.inputs.other:
        e.run(s.label, s.rows, {"accuracy": {}, "constraints": {}})
    sets = [*e.inputs.accuracy, *e.inputs.sparse, *e.inputs.masks, *e.inputs.other]
    return sections.constraints_section({s.label: e.run(s.label, s.rows, {}) for s in sets}) if sets else []


def time_part(e: Evaluation) -> Lines:
    """B7: sampling against SGD to the same accuracy, for the dense zoos whose sampling time is known."""
    sgd_step = e.inputs.sgd_seconds_per_step
    timed = [s for s in e.accuracy if s.sampling_seconds is not None or sampled(s.rows)]
    if not timed or sgd_step is None:
        return []
    trajectories = [r for r in e.inputs.reference if r["variant"] == "dense"]
    times = {}
    for s in timed:
        options = {"sgd_seconds_per_step": sgd_step, "sampling_seconds": s.sampling_seconds}
        m = e.run(s.label, s.rows, {"time_to_network": options}, trajectories)
        times[s.name] = (max(len(s.rows), 1), m)
        e.figure("speedup_per_net", s, timed, bench.speedup_per_net(m))
    return sections.time_section(times, sgd_step)


def theory_part(e: Evaluation) -> Lines:
    """The subset-sum and theory sections, linking the theory's plots where they are."""
    if e.inputs.theory is None:
        return []
    rows, images = e.inputs.theory.rows, e.inputs.theory.images
    links = {k: os.path.relpath(p, e.out) for k, p in images.items()}
    lines = (
        sections.subset_sum_section(rows["subset_sum"], links.get("subset_sum"))
        if rows.get("subset_sum")
        else []
    )
    if rows.get("rss") or rows.get("npp"):
        lines += sections.theory_section(rows.get("rss") or [], rows.get("npp") or [], links)
    return lines


def stages_part(e: Evaluation) -> Lines:
    """B8 and the stage timings of a pipeline run."""
    if not e.inputs.stage_seconds:
        return []
    e.figures["quickstart_seconds"] = bench.pipeline_seconds(e.inputs.stage_seconds)
    return sections.stages_section(e.inputs.stage_seconds)


# ---------------------------------------------------------------------------- the report
PARTS = (dense_part, prompt_part, novelty_part, memorization_part, sparse_part, mask_part, constraints_part,
         time_part, theory_part, stages_part)  # fmt: skip


def write_report(
    inputs: ReportInputs,
    out: str | Path,
    wandb: str = "disabled",
    on_part: Callable[[int, int], None] | None = None,
) -> Path:
    """Evaluate every set of `inputs`, write OUT/report.md, OUT/plots/*.png and OUT/results.json, log to W&B.

    Args:
        inputs: the sets in their roles; a role left empty leaves its section and figures out.
        out: the report's folder (links in report.md are relative to it).
        wandb: "offline", "online" or "disabled".
        on_part: progress: called as on_part(done, len(PARTS)) after each part of the report.

    Returns:
        The path of report.md.
    """
    e = Evaluation(inputs, Path(out))
    body: Lines = []
    for done, part in enumerate(PARTS, start=1):
        body += part(e)
        if on_part is not None:
            on_part(done, len(PARTS))
    sets = [*inputs.accuracy, *inputs.prompts, *inputs.sparse, *inputs.masks, *inputs.other]
    first = e.sgd or next(s.rows for s in sets)
    n_sgd = len({r["member_id"] for r in e.sgd}) if e.sgd else None
    md = [
        *sections.header_section(
            first, inputs.preset, n_sgd, e.figures.get("quickstart_seconds"), inputs.header
        ),
        *sections.benchmarks_section(e.figures),
        *(sections.zoo_section([r for r in inputs.reference if r["final"]]) if inputs.reference else []),
        *body,
    ]
    report = e.out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(md))
    write_json(e.out / "results.json", {"benchmarks": e.figures, "targets": bench.TARGETS, "evaluations": e.rows,
                                         "memorization": e.memorization, "stage_seconds": dict(inputs.stage_seconds),
                                         "preset": inputs.preset})  # fmt: skip
    if wandb != "disabled":
        images = sorted(e.plots.glob("*.png")) + list(
            (inputs.theory.images if inputs.theory else {}).values()
        )
        log_wandb(e.out, e.figures, e.rows, wandb, images)
    return report


def sampled(rows: Sequence[Row]) -> bool:
    """Whether every row records its share of its sampling's seconds (generated rows do)."""
    return all("sampling_seconds" in json_column(r.get("extra")) for r in rows)


def log_wandb(
    out: Path, figures: Mapping[str, float], results: list[dict], mode: str, images: list[Path]
) -> None:
    """The figures, the evaluation rows (a table) and the plots, through Lightning's WandbLogger."""
    from lightning.pytorch.loggers import WandbLogger  # heavy, and only needed when W&B is on

    logger = WandbLogger(
        project="mole", name=f"report-{out.name}", save_dir=str(out), offline=mode == "offline"
    )
    logger.log_metrics({f"bench/{k}": v for k, v in figures.items() if not math.isnan(v)})
    logger.log_table("evaluations", columns=["set", "evaluator", "metric", "value"],
                     data=[[r["set"], r["evaluator"], r["metric"], r["value"]] for r in results])  # fmt: skip
    images = [p for p in images if p.is_file()]
    if images:
        logger.log_image("plots", [str(p) for p in images], caption=[p.stem for p in images])
    logger.experiment.finish()


# ---------------------------------------------------------------------------- any zoo folders
def evaluate_zoos(
    generated: list[Path],
    out: Path,
    reference: Path | None = None,
    baselines: list[Path] | None = None,
    theory: Path | None = None,
    sgd_seconds_per_step: float | None = None,
    wandb: Literal["offline", "online", "disabled"] = "disabled",
    progress: bool = True,
    prompts: list[Path] | None = None,
) -> Path:
    """Evaluate zoo folders and write the report sections that apply (`mole eval`).

    Each generated zoo goes to the sections its rows call for (mole.eval.inputs.role_of): dense nets
    prompted with test_acc -> B2 and B4 against the reference's SGD members and B3; nets prompted or
    projected onto a sparsity -> B5 against the magnitude / imp / random rows of the baselines; masks
    over frozen inits -> B6 against the baselines' edge_popup rows on the same inits. Where several
    zoos fill one section, each gets its own row, named by its folder (and its figures in
    results.json are keyed "<figure>/<folder>"). Every zoo must be of the generated zoos' task; the
    task data is loaded from their rows (task, task_options).

    Args:
        generated: generated zoo folders (`mole sample` outputs, or any zoo to judge).
        out: the report's folder: OUT/report.md, OUT/plots/*.png, OUT/results.json.
        reference: the training zoo (SGD members; B2, B4, B7 and the Zoo section need it).
        baselines: baseline zoo folders (`mole baselines run` outputs): pruning rows for B5,
            edge_popup and lsq_supermask rows for B6.
        theory: a folder of theory rows (`mole theory` CSVs, or a quickstart's theory/): adds the
            subset-sum and theory sections.
        sgd_seconds_per_step: one SGD step of one network, measured alone on this machine: adds B7
            (sampling seconds come from the generated rows).
        wandb: "offline", "online" or "disabled".
        progress: print one line per zoo read, and the evaluation's progress (a bar on a terminal).
        prompts: prompt sweeps (dense nets prompted across the accuracy range): B3 only. A sweep given
            in `generated` would also count in B2 and B4, whose nets should be prompted like the SGD
            members.

    Returns:
        The path of report.md.
    """
    if wandb not in WANDB_MODES:
        raise ConfigError("wandb", f"got {wandb!r}; valid: {', '.join(WANDB_MODES)}")
    if not generated and not prompts:
        raise ConfigError("generated", "no generated zoo given")
    console = Console(quiet=not progress, highlight=False)
    given = [(Path(g), None) for g in generated or []] + [(Path(p), "prompts") for p in prompts or []]
    task, arch, header = None, set(), []
    sets: dict[str, list[ZooSet]] = {role: [] for role in ROLES}
    for (folder, forced), name in zip(given, unique_names([f for f, _ in given])):
        what = "prompts" if forced else "generated"
        rows = read_folder(folder, what)
        task = task or task_of(rows[0])
        check_same_task(rows, folder, task, what)
        arch |= architectures(rows)
        role = forced or role_of(rows)
        if forced and role_of(rows) != "dense":
            raise ConfigError("prompts", f"{folder} holds no dense nets prompted with test_acc")
        sets[role].append(ZooSet(name, f"generated/{name}", rows))
        header.append(f"- `{name}` ({folder}): {len(rows)} networks, {ROLES[role]}")
        console.print(f"[bold]{name}[/bold]: {len(rows)} networks, {ROLES[role]}")
    ref_rows: list[Row] = []
    if reference is not None:
        ref_rows = read_folder(Path(reference), "reference", final_only=False, tensors="final")
        check_same_task(ref_rows, Path(reference), task, "reference")
        check_architectures(ref_rows, Path(reference), arch, "reference")
        console.print(
            f"[bold]reference[/bold] {reference}: {len({r['member_id'] for r in ref_rows})} members"
        )
    pruning, popup, built = [], [], []
    for folder in map(Path, baselines or []):
        rows = read_folder(folder, "baselines")
        check_same_task(rows, folder, task, "baselines")
        p, e, c = split_baselines(rows)
        pruning, popup, built = pruning + p, popup + e, built + c
        console.print(
            f"[bold]baselines[/bold] {folder}: {len(p)} pruned, {len(e)} edge-popup, {len(c)} construction networks"
        )
    inputs = ReportInputs(
        data=load_task(task[0], **task[1]),
        reference=ref_rows,
        accuracy=sets["dense"],
        prompts=sets["dense"] + sets["prompts"],
        sparse=sets["sparse"],
        masks=sets["masks"],
        other=sets["other"],
        pruning=pruning,
        edge_popup=popup,
        construction=built,
        theory=load_theory(Path(theory)) if theory is not None else None,
        sgd_seconds_per_step=sgd_seconds_per_step,
        header=header,
    )
    with StageProgress("evaluating", unit="report parts", enabled=progress) as on_part:
        report = write_report(inputs, out, wandb, on_part)
    console.print(f"report: {report}")
    return report
