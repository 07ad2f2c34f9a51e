"""The `mole` command: wires the stages together (nothing imports this module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from mole.errors import MoleError

DEFAULT_ZOO_ROOT = Path("checkpoints_zoo")


# ---------------------------------------------------------------------------- commands
def zoo_build(
    config: str, out: str | None, num_shards: int, shard_index: int, accelerator: str, progress: bool
) -> int:
    from mole.zoo.build import build_zoo
    from mole.zoo.spec import ZooSpec

    spec = ZooSpec.from_yaml(config)
    out_dir = Path(out) if out else DEFAULT_ZOO_ROOT / spec.name
    result = build_zoo(spec, out_dir, num_shards, shard_index, accelerator, progress)
    print(
        f"zoo {spec.name}: built {len(result.built)} shard(s), skipped {len(result.skipped)} already done, "
        f"{result.seconds:.1f} s -> {result.zoo}"
    )
    return 0


def zoo_info(zoo: str, as_json: bool, plot: str | None) -> int:
    from mole.zoo.info import plot_summary, print_summary, zoo_summary

    summary = zoo_summary(zoo)
    png = plot_summary(summary, plot or Path(zoo) / "info.png")
    if as_json:
        print(json.dumps({**summary, "plot": str(png)}, indent=1))
    else:
        print_summary(summary)
        print(f"plot: {png}")
    return 0


def zoo_export(zoo: str, member: str, to: str, step: int | None) -> int:
    from mole.zoo.export import export_member

    folder = export_member(zoo, member, to, step)
    print(f"exported {member} -> {folder}/weights.safetensors, {folder}/meta.json")
    return 0


def quickstart(out: str, preset: str, wandb: str | None, progress: bool) -> int:
    """`mole quickstart`: zoo -> tokenizer -> diffusion -> sampling -> baselines -> report (mole.pipeline)."""
    from mole.pipeline import run_quickstart

    report = run_quickstart(out, preset, wandb, progress)
    print(f"report: {report}")
    return 0


def evaluate_run(run: str, wandb: str) -> int:
    """`mole eval RUN`: rewrite a quickstart run's report.md (and results.json, W&B) from its folders."""
    from mole.pipeline import report_from_run

    print(f"report: {report_from_run(run, wandb)}")
    return 0


def train(argv: list[str]) -> int:
    """`mole train CONFIG [--key value ...]`: everything after `train` goes to LightningCLI."""
    from mole.diffusion.train import cli_main

    cli_main(argv)
    return 0


def sample(
    model: str,
    conditions: str,
    num: int,
    steps: int,
    guidance: float,
    seed: int,
    out: str,
    init_zoo: str | None,
    init_member: str | None,
    batch_size: int,
    scope: str | None,
    progress: bool,
    temperature: float = 1.0,
    project: str = "{}",
) -> int:
    """`mole sample MODEL_DIR --conditions ... --out ZOO`: generate networks into a zoo folder."""
    from mole.diffusion.generated import generate_zoo
    from mole.diffusion.options import SampleOptions
    from mole.diffusion.prompts import parse_conditions
    from mole.errors import ConfigError

    cond = parse_conditions(conditions)
    context, ref = None, None
    if (init_zoo is None) != (init_member is None):
        raise ConfigError("init_member", "--init-zoo and --init-member come together")
    if init_zoo is not None:
        from mole.tokenizer import MemberTensors
        from mole.zoo.export import find_member_rows

        context, ref = (
            MemberTensors.from_row(find_member_rows(Path(init_zoo), init_member)[-1]),
            f"{init_zoo}:{init_member}",
        )
    options = SampleOptions(
        steps=steps, guidance=guidance, seed=seed, batch_size=batch_size, scope=scope, temperature=temperature
    )
    with _sample_bar(progress) as on_step:
        zoo, sampled = generate_zoo(
            model, out, cond, num, options, context=context, context_ref=ref,
            project=parse_conditions(project), on_step=on_step,
        )  # fmt: skip
    print(f"{'sampled' if sampled else 'already there:'} {num} network(s) -> {zoo}")
    return 0


class _sample_bar:
    """A rich progress bar over denoising steps (on_step(done, total)), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.task = enabled, None, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar.__enter__()
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task("denoising steps", total=total)
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


# ---------------------------------------------------------------------------- parser
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mole",
        description="mole: build checkpoint zoos of small networks (dense, pruned, quantized, low-rank, "
        "supermasks), tokenize them, and learn to generate weights and masks.",
    )
    commands = parser.add_subcommands(dest="command")

    zoo = ArgumentParser(description="Build, inspect and export checkpoint zoos.")
    commands.add_subcommand("zoo", zoo, help="checkpoint zoos")
    zoo_cmds = zoo.add_subcommands(dest="zoo_command")

    build = ArgumentParser(
        description="Train every member of a sweep stacked (K at once) and write Parquet shards plus a manifest. "
        "Rerunning the same command resumes: finished shards are skipped."
    )
    build.add_argument("config", help="sweep spec YAML (see configs/zoo/)")
    build.add_argument("--out", default=None, help="zoo folder (default: checkpoints_zoo/<name>)")
    build.add_argument("--num-shards", type=int, default=1, help="split the sweep across this many processes")
    build.add_argument("--shard-index", type=int, default=0, help="which part this process builds (0-based)")
    build.add_argument("--accelerator", default="cpu", choices=["auto", "cpu", "cuda"], help="where to train")
    build.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    zoo_cmds.add_subcommand("build", build, help="build or resume a zoo from a sweep spec")

    info = ArgumentParser(
        description="Counts and final test accuracy / loss per variant and per level (sparsity, bits, rank); "
        "also saves the accuracy-per-level plot as a PNG."
    )
    info.add_argument("zoo", help="zoo folder")
    info.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--plot", default=None, help="where to save the accuracy plot (default: ZOO/info.png)")
    zoo_cmds.add_subcommand("info", info, help="summarise a zoo")

    export = ArgumentParser(
        description="Write one member as weights.safetensors + meta.json (loadable as an nn.Module)."
    )
    export.add_argument("zoo", help="zoo folder")
    export.add_argument("member", help="member id (see the member_id column)")
    export.add_argument("--to", required=True, help="output folder")
    export.add_argument("--step", type=int, default=None, help="snapshot step (default: final)")
    zoo_cmds.add_subcommand("export", export, help="export a member")

    qs = ArgumentParser(
        description="The whole pipeline on digits: build the zoo (dense + every variant), train the "
        "weight and mask denoisers, sample dense and sparse networks and supermasks, run the baselines "
        "(magnitude, random, IMP, edge-popup, subset sum) and the theory experiments, and write "
        "OUT/report.md. Resumable: rerun the same command after an interruption."
    )
    qs.add_argument("--out", default="runs/quickstart", help="run folder")
    qs.add_argument("--preset", default="default", help="sizes: default (the demo, < 10 min) or tiny (CI)")
    qs.add_argument(
        "--wandb", default=None, help="W&B: offline, online or disabled (default: $WANDB_MODE, else offline)"
    )
    qs.add_argument("--progress", type=bool, default=True, help="show progress bars")
    commands.add_subcommand("quickstart", qs, help="run the whole pipeline on digits, write a report")

    ev = ArgumentParser(description="Evaluate a quickstart run folder again and rewrite its report.md.")
    ev.add_argument("run", help="a `mole quickstart` run folder")
    ev.add_argument("--wandb", default="disabled", help="W&B: offline, online or disabled")
    commands.add_subcommand("eval", ev, help="rewrite a run's report: mole eval RUN")

    tr = ArgumentParser(
        description="Train a conditional diffusion denoiser on a zoo (LightningCLI: `mole train --help`)."
    )
    commands.add_subcommand("train", tr, help="train a denoiser: mole train CONFIG [--trainer.* ...]")

    sp = ArgumentParser(
        description="Draw networks from a trained denoiser (DDIM, classifier-free guidance), project them "
        "onto the prompted sparsity / bits / rank and write them as a zoo (variant 'generated')."
    )
    sp.add_argument("model", help="model folder (a `mole train` run's model/)")
    sp.add_argument(
        "--conditions",
        default="{}",
        help='JSON (\'{"test_acc": 0.95, "variant": "dense"}\') or key=value pairs',
    )
    sp.add_argument("--num", type=int, default=16, help="networks to draw")
    sp.add_argument("--steps", type=int, default=50, help="DDIM steps")
    sp.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    sp.add_argument(
        "--temperature", type=float, default=1.0,
        help="initial noise scale in [0, 2] (weights): < 1 trades diversity for accuracy",
    )  # fmt: skip
    sp.add_argument(
        "--project", default="{}",
        help="sparsity / bits / rank to project onto without conditioning on them (a model that never "
        "saw them, e.g. sparsity=0.8 on a dense-only model: its nets pruned by magnitude)",
    )  # fmt: skip
    sp.add_argument("--seed", type=int, default=0, help="seed of the noise (and drawn frozen inits)")
    sp.add_argument("--out", required=True, help="zoo folder to write")
    sp.add_argument("--init-zoo", default=None, help="mask models: zoo holding the frozen init")
    sp.add_argument("--init-member", default=None, help="mask models: member id whose init_params to use")
    sp.add_argument("--batch-size", type=int, default=64, help="networks per denoiser batch")
    sp.add_argument("--scope", default=None, help="sparsity ranking: global or layerwise (default by target)")
    sp.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    commands.add_subcommand("sample", sp, help="generate networks: mole sample MODEL_DIR --out ZOO")

    from mole.theory.cli import add_theory_parser

    add_theory_parser(commands)
    from mole.baselines.cli import add_baselines_parser

    add_baselines_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # LightningCLI parses the rest itself (--config, --trainer.*, --help)
        try:
            return train(argv[1:])
        except MoleError as e:
            print(f"mole: error: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        if cfg.command == "zoo":
            sub = cfg.zoo.zoo_command
            args = cfg.zoo[sub]
            if sub == "build":
                return zoo_build(
                    args.config, args.out, args.num_shards, args.shard_index, args.accelerator, args.progress
                )
            if sub == "info":
                return zoo_info(args.zoo, args.as_json, args.plot)
            if sub == "export":
                return zoo_export(args.zoo, args.member, args.to, args.step)
        if cfg.command == "quickstart":
            q = cfg.quickstart
            return quickstart(q.out, q.preset, q.wandb, q.progress)
        if cfg.command == "eval":
            return evaluate_run(cfg.eval.run, cfg.eval.wandb)
        if cfg.command == "baselines":
            from mole.baselines.cli import run_baselines_command

            return run_baselines_command(cfg.baselines)
        if cfg.command == "theory":
            from mole.theory.cli import run_theory

            return run_theory(cfg.theory)
        if cfg.command == "sample":
            a = cfg.sample
            return sample(
                a.model, a.conditions, a.num, a.steps, a.guidance, a.seed, a.out,
                a.init_zoo, a.init_member, a.batch_size, a.scope, a.progress, a.temperature, a.project,
            )  # fmt: skip
    except MoleError as e:
        print(f"mole: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mole: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    parser.error(f"unknown command {cfg.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
