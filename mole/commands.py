"""The top-level `mole` stage functions: zoo build / info / export, quickstart, eval, train, sample and
bench matrix.

Typed and documented: mole/cli.py turns each signature and docstring into its subcommand's flags and help.
"""

from __future__ import annotations

from dataclasses import replace
from json import dumps
from pathlib import Path
from typing import Any, Literal

from mole.bench.learn import UPDATE_OPTIONS, learn_table, run_learn
from mole.bench.matrix import run_matrix
from mole.bench.prompts import prompts_table, run_prompts
from mole.bench.structure import run_structure, structure_table
from mole.diffusion.generated import generate_zoo
from mole.diffusion.model_dir import read_meta
from mole.diffusion.options import SampleOptions
from mole.diffusion.update import fresh_init, load_start, update_zoo
from mole.errors import ConfigError
from mole.eval.run import evaluate_zoos
from mole.pipeline import LOG, report_from_run, run_quickstart
from mole.progress import StageProgress, on_terminal
from mole.zoo.build import build_zoo, default_processes, resolve_shards
from mole.zoo.export import export_member
from mole.zoo.info import plot_summary, print_summary, zoo_summary
from mole.zoo.spec import ZooSpec

DEFAULT_ZOO_ROOT = Path("checkpoints_zoo")
WandbMode = Literal["offline", "online", "disabled"]


# ---------------------------------------------------------------------------- zoo
def zoo_build(
    spec: str,
    *,
    out: str | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "cpu",
    progress: bool = True,
    processes: int | None = None,
) -> int:
    """Build or resume a zoo from a sweep spec.

    Train every member of a sweep stacked (K at once) and write Parquet shards plus a manifest.
    Rerunning the same command resumes: finished shards are skipped.

    Args:
        spec: sweep spec YAML (see configs/zoo/)
        out: zoo folder (default: checkpoints_zoo/<name>)
        num_shards: split the sweep across this many processes (default: from torchrun's WORLD_SIZE, srun's
            SLURM_STEP_NUM_TASKS or a SLURM array's SLURM_ARRAY_TASK_COUNT, else 1)
        shard_index: which part this process builds, 0-based (default: from RANK, SLURM_PROCID or
            SLURM_ARRAY_TASK_ID, else 0)
        accelerator: where to train
        progress: show a progress bar
        processes: CPU processes training each group's members, 1 thread each; the zoo is the same for any
            value (default: one per core, shared among torchrun's local ranks)
    """
    sweep = ZooSpec.from_yaml(spec)
    out_dir = Path(out) if out else DEFAULT_ZOO_ROOT / sweep.name
    num_shards, shard_index = resolve_shards(num_shards, shard_index)
    processes = default_processes() if processes is None else processes
    # off a terminal the line below is the summary (a bar's last frame would only repeat it)
    result = build_zoo(
        sweep, out_dir, num_shards, shard_index, accelerator, progress and on_terminal(), processes
    )
    print(
        f"zoo {sweep.name}: built {len(result.built)} shard(s), skipped {len(result.skipped)} already done, "
        f"{result.seconds:.1f} s -> {result.zoo}"
    )
    return 0


def zoo_info(zoo: str, *, json: bool = False, plot: str | None = None, progress: bool = True) -> int:
    """Summarise a zoo.

    Counts and final test accuracy / loss per variant and per level (sparsity, bits, rank); also saves
    the accuracy-per-level plot as a PNG.

    Args:
        zoo: zoo folder
        json: print JSON instead of a table
        plot: where to save the accuracy plot (default: ZOO/info.png)
        progress: a progress indicator on a terminal, else one line when done (never with --json)
    """
    with StageProgress("reading the zoo", enabled=progress and not json):
        summary = zoo_summary(zoo)
        png = plot_summary(summary, plot or Path(zoo) / "info.png")
    if json:
        print(dumps({**summary, "plot": str(png)}, indent=1))
    else:
        print_summary(summary)
        print(f"plot: {png}")
    return 0


def zoo_export(zoo: str, member: str, *, to: str, step: int | None = None, progress: bool = True) -> int:
    """Export a member.

    Write one member as weights.safetensors + meta.json (loadable as an nn.Module).

    Args:
        zoo: zoo folder
        member: member id (see the member_id column)
        to: output folder
        step: snapshot step (default: final)
        progress: a progress indicator on a terminal, else one line when done
    """
    with StageProgress(f"exporting {member}", enabled=progress):
        folder = export_member(zoo, member, to, step)
    print(f"exported {member} -> {folder}/weights.safetensors, {folder}/meta.json")
    return 0


# ---------------------------------------------------------------------------- pipeline
def quickstart(
    *,
    out: str = "runs/quickstart",
    preset: str = "default",
    wandb: WandbMode | None = None,
    progress: bool = True,
    recipe: str | None = None,
) -> int:
    """Run the whole pipeline on digits, write a report.

    The whole pipeline on digits: build the zoo (dense + every variant), train the weight and mask
    denoisers, sample dense and sparse networks and supermasks, run the baselines (magnitude, random,
    IMP, edge-popup, subset sum) and the theory experiments, and write OUT/report.md. Resumable: rerun
    the same command after an interruption.

    Args:
        out: run folder
        preset: sizes: default (the demo, < 10 min), or a subfolder of the recipe whose files override
            it (tiny: the CI smoke run)
        wandb: W&B: offline, online or disabled (default: $WANDB_MODE, else offline)
        progress: show progress bars
        recipe: the recipe folder (default: the repository's configs/quickstart; copy it to change it)
    """
    report = run_quickstart(out, preset, wandb, progress, recipe=recipe)
    print(f"library output: {Path(out) / LOG}")
    print(f"report: {report}")
    return 0


def bench_matrix(
    matrix: str = "configs/matrix/matrix.yaml",
    *,
    out: str = "runs/matrix",
    cells: list[str] | None = None,
    seeds: list[int] | None = None,
    preset: str | None = None,
    wandb: WandbMode | None = None,
    progress: bool = True,
    table_only: bool = False,
) -> int:
    """Run the benchmark matrix: one recipe over cells x training seeds, one table.

    Per cell (a zoo spec) build the zoo and the pruning baselines, then per training seed train the
    weight model, sample the B2, B3 and B5 sets and evaluate them; write OUT/matrix.json, OUT/matrix.md
    and OUT/plots/matrix.png. Resumable: rerun the same command after an interruption.

    Args:
        matrix: the matrix file (cells, seeds, recipe; see configs/matrix/)
        out: run folder
        cells: only these cells, by name (e.g. [digits_mlp])
        seeds: these training seeds instead of the matrix file's
        preset: also merge each recipe file's override in this preset's folder (e.g. tiny)
        wandb: W&B for training: offline, online or disabled (default: $WANDB_MODE, else offline)
        progress: show progress bars
        table_only: run nothing; write the table of every chosen cell and seed finished in OUT
            (e.g. cells run side by side by separate commands), naming the others
    """
    path = run_matrix(matrix, out, cells, seeds, preset, progress, wandb, table_only=table_only)
    print((path.parent / "matrix.md").read_text())
    return 0


def bench_learn(
    zoo: str = "configs/ltl/digits_mlp_zoo.yaml",
    model: str = "configs/ltl/digits_mlp_pairs_canonical.yaml",
    *,
    out: str = "runs/ltl/digits_mlp",
    inits: int = 32,
    mids: int = 32,
    prompts: int = 8,
    updates: list[int] | None = None,
    steps: int = UPDATE_OPTIONS.steps,
    seed: int = 0,
    guidance: float = 1.0,
    guidance_interval: tuple[int, int] | None = None,
    timestep_spacing: Literal["leading", "trailing", "linspace"] = UPDATE_OPTIONS.timestep_spacing,
    sgd_steps: int = 1000,
    sgd_every: int = 10,
    wandb: WandbMode = "disabled",
    progress: bool = False,
) -> int:
    """Run benchmark B9, learning to learn: updates of unseen starts by a G.pt pairs model.

    Build the learning-to-learn zoo and train the pairs model (both resumed), then update unseen random
    inits and unseen mid-training snapshots at target test losses across the zoo's range, K times;
    report achieved against prompted loss and accuracy, the SGD steps an update is worth and the
    distance moved from the start against the nearest training member. Writes OUT/learn.json and
    OUT/plots/b9_*.png.

    Args:
        zoo: the learning-to-learn zoo spec (configs/ltl/*_zoo.yaml)
        model: the pairs model's `mole train` config (configs/ltl/*_pairs.yaml)
        out: run folder
        inits: fresh random inits as starts (seeds no zoo member used)
        mids: mid-training snapshots of members the model never trained on, as starts
        prompts: target test losses per start, log-spaced over the training rows' range
        updates: the K reported (default [1, 2, 4]); the chain runs to the largest
        steps: DDIM steps per update (default one trailing step, the x0 read at t = 999: it follows the
            prompts far better than 20 leading steps on both cells, ledger L37)
        seed: sampling seed (update k uses seed + k - 1)
        guidance: classifier-free guidance scale of each update (1: conditional only)
        guidance_interval: [lo, hi], the training timesteps at which guidance applies (None: all;
            see `mole sample --guidance_interval`)
        timestep_spacing: where the DDIM steps lie (diffusers' spacing; trailing: one step reads x0 at
            t = 999)
        sgd_steps: SGD from each start runs this many steps (the zoo's median hyperparameters)
        sgd_every: its test loss is read every this many steps
        wandb: W&B for training: offline, online or disabled
        progress: show progress bars
    """
    path = run_learn(
        zoo, model, out, inits, mids, prompts, tuple(updates or (1, 2, 4)),
        replace(UPDATE_OPTIONS, steps=steps, seed=seed, guidance=guidance, guidance_interval=guidance_interval,
                timestep_spacing=timestep_spacing),
        sgd_steps, sgd_every, wandb, progress,
    )  # fmt: skip
    print(learn_table(path))
    return 0


def evaluate(
    *,
    generated: list[str] | None = None,
    prompts: list[str] | None = None,
    reference: str | None = None,
    baselines: list[str] | None = None,
    out: str | None = None,
    theory: str | None = None,
    sgd_seconds_per_step: float | None = None,
    run: str | None = None,
    wandb: WandbMode = "disabled",
    progress: bool = True,
) -> int:
    """Evaluate zoos and write a report: mole eval --generated [Z1,Z2] --reference ZOO --out DIR.

    Evaluate any zoo folders and write OUT/report.md, OUT/plots and OUT/results.json with the sections
    that apply: dense generated nets prompted with test_acc get B2 / B4 against the reference's SGD
    members and B3; nets at a sparsity get B5 against the baselines' magnitude / IMP / random rows;
    masks over frozen inits get B6 against their edge-popup rows. Or rewrite a finished quickstart
    run's report with --run RUN.

    Args:
        generated: generated zoo folders (`mole sample` outputs, or any zoo to judge), e.g. [Z1,Z2]
        prompts: prompt sweeps (dense nets sampled across the accuracy range): judged by B3 alone,
            kept out of B2 and B4, e.g. [P1]
        reference: the training zoo (its SGD members; needed for B2, B4, B7 and the zoo table)
        baselines: baseline zoo folders (`mole baselines run` outputs), e.g. [B1,B2]
        out: the report's folder
        theory: a folder of `mole theory` CSVs (or a quickstart's theory/): adds the theory sections
        sgd_seconds_per_step: one SGD step of one network, measured alone on this machine: adds B7
        run: a finished `mole quickstart` run folder: rewrite its report instead (the other zoo flags
            must be left out)
        wandb: W&B: offline, online or disabled
        progress: print a line per zoo read
    """
    if run is not None:
        given = [f for f, v in (("generated", generated), ("prompts", prompts), ("reference", reference),
                                ("baselines", baselines), ("out", out), ("theory", theory)) if v]  # fmt: skip
        if given:
            raise ConfigError(given[0], "--run rewrites a quickstart run's report: give it alone")
        with StageProgress("evaluating", unit="report parts", enabled=progress) as on_part:
            report = report_from_run(run, wandb, on_part)
        print(f"report: {report}")
        return 0
    if not generated and not prompts:
        raise ConfigError("generated", "give the zoo folders to evaluate (--generated [Z1,Z2]), or --run RUN")
    if out is None:
        raise ConfigError("out", "give the report's folder (--out DIR)")
    report = evaluate_zoos(
        [Path(g) for g in generated], Path(out), Path(reference) if reference else None,
        [Path(b) for b in baselines or []], Path(theory) if theory else None, sgd_seconds_per_step,
        wandb, progress, [Path(p) for p in prompts or []],
    )  # fmt: skip
    print(f"report: {report}")
    return 0


def train(*argv: str) -> int:
    """Train a denoiser: mole train CONFIG [--trainer.* ...].

    Train a conditional diffusion denoiser on a zoo. Everything after `train` goes to LightningCLI
    (`mole train --help` lists its options).
    """
    from mole.diffusion.train import cli_main  # Lightning takes seconds to import; only `mole train` needs it

    cli_main(list(argv))
    return 0


def bench_prompts(
    model: str,
    *,
    out: str,
    options: SampleOptions,
    condition: Literal["test_acc", "test_loss"] = "test_acc",
    prompts: int = 8,
    per_prompt: int = 4,
    beyond: int = 3,
    num: int = 16,
    progress: bool = True,
) -> int:
    """Measure how a weights model follows a prompted accuracy or loss, inside its range and past the best.

    Inside the range the model trained on: Spearman, MAE and monotonicity of achieved against prompted
    (B3 for any condition). Past the zoo's best (the --extrapolate opt-in, up to accuracy 1 or loss 0):
    the best and the mean of --num draws per prompt against the zoo's best member and 90th percentile
    (B12). Writes OUT/prompts_CONDITION.json and OUT/plots/prompts_CONDITION.png.

    Args:
        model: model folder (a `mole train` run's model/, a weights model of single checkpoints)
        out: folder for the JSON and the plot
        options: how to draw (its fields are flags of their own; --extrapolate is set where needed)
        condition: the prompted condition
        prompts: prompts evenly spaced over the trained range
        per_prompt: draws per prompt inside the range
        beyond: prompts past the trained edge, evenly spaced up to the bound (0: none)
        num: draws per prompt at the edge and past it
        progress: show a progress bar
    """
    path = run_prompts(model, out, condition, prompts, per_prompt, beyond, num, options, progress)
    print(prompts_table(path))
    return 0


def bench_structure(
    model: str,
    *,
    out: str,
    options: SampleOptions,
    sparsities: list[float] | None = None,
    bits: list[int | str] | None = None,
    ranks: list[int] | None = None,
    num: int = 16,
    progress: bool = True,
) -> int:
    """Measure sparse, quantized and low-rank nets of a model told the level against projections and baselines.

    Every level draws --num nets prompted with it, made exact from their weights (magnitude top-k, PTQ,
    truncated SVD) and read from the model's mask, code or factor channels instead, and --num dense
    draws projected onto the level. Compared with one-shot magnitude pruning and IMP of the zoo's final
    dense members at each sparsity (B5), with the zoo's PTQ / QAT members at each bit-width and its
    truncated-SVD / factorized members at each rank (B11). Writes
    OUT/structure.json, OUT/plots/structure.png and the baselines under OUT/baselines.

    Args:
        model: model folder of a weights model trained on sparse and quantized rows
        out: folder for the JSON, the plot and the baselines
        options: how to draw (its fields are flags of their own; --channels is set for each row)
        sparsities: the sparsity levels (default 0.5, 0.8, 0.9; [] for none)
        bits: the bit-widths (default 8, 4, 2, ternary; [] for none)
        ranks: the ranks (default none), compared with the zoo's truncated-SVD and factorized members
        num: draws per level
        progress: show progress bars
    """
    path = run_structure(
        model, out, (0.5, 0.8, 0.9) if sparsities is None else sparsities,
        (8, 4, 2, "ternary") if bits is None else bits, num, options, progress, ranks or (),
    )  # fmt: skip
    print(structure_table(path))
    return 0


# ---------------------------------------------------------------------------- sample
def sample(
    model: str,
    *,
    out: str,
    options: SampleOptions,
    conditions: dict[str, Any] | None = None,
    num: int = 16,
    project: dict[str, Any] | None = None,
    start: str | None = None,
    start_init: int | None = None,
    updates: int = 1,
    init_zoo: str | None = None,
    init_member: str | None = None,
    progress: bool = True,
) -> int:
    """Generate networks: mole sample MODEL_DIR --out ZOO.

    Draw networks from a trained denoiser (DDIM, classifier-free guidance), project them onto the
    prompted sparsity / bits / rank and write them as a zoo (variant 'generated'). A pairs model
    (G.pt, trained with data mode pairs) updates a start: --start ZOO:MEMBER@STEP or --start_init SEED,
    prompted e.g. with --conditions.test_loss 0.3; its start's test loss and accuracy are measured, and
    every row records its start in extra["start"]. A pairs model follows its prompt best in one trailing
    step, as `mole bench learn` draws, and draws so unless --steps / --timestep_spacing say otherwise.

    Args:
        model: model folder (a `mole train` run's model/)
        out: zoo folder to write
        options: how to draw (its fields are flags of their own)
        conditions: the prompt, e.g. '{"test_acc": 0.95, "variant": "dense"}' or --conditions.test_acc 0.95;
            a model of several architectures and tasks draws the one its architecture, task, variant and
            arch_options ask for, e.g. '{"architecture": "mlp", "arch_options": {"hidden": [32, 32]}}'
        num: networks to draw
        project: sparsity / bits / rank to project onto without conditioning on them (a model that never
            saw them, e.g. '{"sparsity": 0.8}' on a dense-only model: its nets pruned by magnitude)
        start: the starting network, ZOO:MEMBER@STEP (that member's snapshot; without @STEP its final
            one): a pairs model updates it, a mask model takes its frozen init
        start_init: pairs models: start from a fresh init of the architecture drawn from this seed (its
            own initialiser; a training member's seed is refused)
        updates: pairs models: apply the model this many times, each from its own last output; every
            update is written (its step is the update's number)
        init_zoo: the starting network's zoo, with --init_member (the same as --start ZOO:MEMBER)
        init_member: the starting network's member id, with --init_zoo (its final snapshot)
        progress: show a progress bar
    """
    if (init_zoo is None) != (init_member is None):
        raise ConfigError("init_member", "--init_zoo and --init_member come together")
    if init_zoo is not None:
        if start is not None:
            raise ConfigError("start", "give --start or --init_zoo / --init_member, not both")
        start = f"{init_zoo}:{init_member}"
    if start is not None and start_init is not None:
        raise ConfigError("start_init", "give --start or --start_init, not both")
    meta = read_meta(model) if start is not None or start_init is not None or updates != 1 else {}
    pairs = meta.get("mode") == "pairs" and meta.get("target") != "mask"
    if not pairs and start_init is not None:
        raise ConfigError("start_init", "needs a pairs model (trained with data mode pairs)")
    if updates != 1 and not (pairs and (start is not None or start_init is not None)):
        raise ConfigError("updates", "needs a pairs model and a start (--start or --start_init)")
    if start is not None and meta.get("target") != "mask" and not pairs:
        raise ConfigError(
            "start", "the model was trained on single checkpoints (data mode checkpoints): it takes no start"
        )
    if pairs and project:
        raise ConfigError("project", "an update is not projected: leave it out with a start")
    with StageProgress("sampling", unit="denoising steps", enabled=progress) as on_step:
        if pairs:  # a G.pt update of the start
            first = (
                load_start(start) if start is not None else fresh_init(meta, start_init, prompt=conditions)
            )
            zoo, sampled = update_zoo(model, out, [first], conditions or {}, num, updates, options, on_step)
        else:
            context = None if start is None else load_start(start).member
            zoo, sampled = generate_zoo(
                model, out, conditions or {}, num, options, context=context, context_ref=start,
                project=project or {}, on_step=on_step,
            )  # fmt: skip
    what = f"{num} network(s)" + (f" x {updates} updates" if updates > 1 else "")
    print(f"{'sampled' if sampled else 'already there:'} {what} -> {zoo}")
    return 0
