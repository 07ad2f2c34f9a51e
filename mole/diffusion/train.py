"""`mole train CONFIG [--section.key value ...]`: LightningCLI over a system + ZooDataModule.

The config's `model.class_path` picks the system, its `model.init_args.net` the network:
    weights  mole.diffusion.system.DiffusionSystem with net mole.diffusion.denoiser.Denoiser
    masks    mole.masks.system.MaskSystem with net mole.masks.model.MaskModel (and data.target mask)
Everything is a typed argument of a class; the network's data-dependent arguments (LINKED) are
linked in from the set-up data module (conditioning.model_args), each only where the chosen network
takes it. The run lives in `run_dir`:
    checkpoints/last.ckpt   resumed automatically when the same command runs again
    csv/version_N/          CSVLogger (always) and the resolved config.yaml
    wandb/                  WandbLogger (offline unless --wandb online; --wandb disabled: none)
    model/                  the exported model folder (mole.diffusion.model_dir)
Strategies come from Lightning unchanged: --trainer.strategy ddp --trainer.devices N --trainer.num_nodes M.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import shutil
import warnings
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
import wandb
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from mole.diffusion.conditioning import model_args
from mole.diffusion.datamodule import TARGETS, ZooDataModule
from mole.diffusion.model_dir import ExportModel
from mole.diffusion.training import check_target
from mole.errors import ConfigError, MoleError
from mole.quiet import chatter_to, routed_to
from mole.zoo.store import verify_zoo

# Linked into model.init_args.net.init_args; a key the chosen network does not take is skipped
# (the Denoiser takes context_dim, the MaskModel channels).
LINKED = ("token_dim", "max_tokens", "num_layers_ids", "conditions", "context_dim", "channels")
LOG = "train.log"  # library chatter of a `mole train` run
WANDB_MODES = ("offline", "online", "disabled")
DEFAULT_RUNS = Path("runs") / "diffusion"


def _linked(key: str, dm: ZooDataModule):
    return model_args(dm).get(key)  # None for a key of the other model, which this one does not take


class MoleCLI(LightningCLI):
    """LightningCLI with mole's run folder, loggers, checkpoints, resume and model export.

    Run alone, it sends library chatter (Lightning's tips and device lines, W&B's banners) to
    <run_dir>/train.log from the trainer's creation until it returns (mole.quiet).
    """

    def __init__(self, *args, **kwargs):
        self.quiet = ExitStack()  # holds chatter_to(run_dir / LOG) once the run folder is known
        with self.quiet:
            super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="run folder (default: runs/diffusion/<config name>)",
        )
        env = os.environ.get("WANDB_MODE")  # tests and CI set it; an explicit --wandb wins
        parser.add_argument(
            "--wandb",
            type=str,
            default=env if env in WANDB_MODES else "offline",
            choices=WANDB_MODES,
            help="W&B logging: offline (default), online, disabled (default: $WANDB_MODE when set)",
        )
        parser.add_argument(
            "--checkpoint_every", type=int, default=0, help="also checkpoint every N steps (0: per epoch)"
        )
        for key in LINKED:
            fn = functools.partial(_linked, key)
            fn.__name__ = f"model_args[{key}]"
            parser.link_arguments(
                "data", f"model.init_args.net.init_args.{key}", compute_fn=fn, apply_on="instantiate"
            )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then check the zoo against its manifest: a bad zoo is a one-line error before
        LightningCLI seeds (which logs a line) or writes anything."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")  # self.subcommand is set only after this
        zoo = (self.config[sub] if sub else self.config)["data"]["zoo"]
        for folder in [zoo] if isinstance(zoo, str) else zoo or []:  # one folder, or a mixed zoo's list
            verify_zoo(Path(folder))

    def before_instantiate_classes(self) -> None:
        """The chosen system must learn from the data module's kind of rows (one-line error)."""
        cfg = self._cfg
        module, _, name = str(cfg["model"]["class_path"]).rpartition(".")
        system = getattr(importlib.import_module(module), name)
        target = cfg["data"]["target"]
        if hasattr(system, "TARGET") and target in TARGETS:  # an unknown target: the data module says so
            check_target(SimpleNamespace(target=target), system.TARGET)

    # ------------------------------------------------------------------ run folder
    @property
    def _cfg(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def run_dir(self) -> Path:
        """--run_dir, else runs/diffusion/<first config file's stem>, else a hash of the config."""
        cfg = self._cfg
        if cfg.get("run_dir"):
            return Path(cfg["run_dir"])
        configs = cfg.get("config") or []
        if configs:
            return DEFAULT_RUNS / Path(str(configs[0])).stem
        digest = hashlib.sha256(json.dumps(cfg.as_dict(), sort_keys=True, default=str).encode()).hexdigest()
        return DEFAULT_RUNS / digest[:12]

    def instantiate_trainer(self, **kwargs):
        run_dir = self.run_dir()
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        if trainer_cfg.get("logger") in (None, True):  # not configured: CSV always, W&B as asked
            loggers = [CSVLogger(run_dir, name="csv")]
            if self._cfg["wandb"] != "disabled":
                loggers.append(
                    WandbLogger(
                        save_dir=str(run_dir),
                        project="mole",
                        name=run_dir.name,
                        offline=self._cfg["wandb"] == "offline",
                    )
                )
            kwargs["logger"] = loggers
        kwargs.setdefault("default_root_dir", str(run_dir))
        new = not run_dir.exists()
        if routed_to() is None:  # `mole train` alone (the quickstart and matrix route to their own log)
            run_dir.mkdir(parents=True, exist_ok=True)  # the data and model are valid by now
            self.quiet.enter_context(chatter_to(run_dir / LOG))
        every = self._cfg["checkpoint_every"] or None
        self.trainer_defaults = {
            **self.trainer_defaults,
            "callbacks": [
                ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, every_n_train_steps=every),
                ExportModel(run_dir / "model"),
            ],
        }
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, MisconfigurationException) as e:  # an impossible --trainer.* combination
            self.quiet.close()
            if new:  # a failed command leaves nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise ConfigError("trainer", str(e).strip().splitlines()[0]) from None

    def before_fit(self) -> None:
        """Resume from <run_dir>/checkpoints/last.ckpt when it exists (the same command rerun)."""
        last = self.run_dir() / "checkpoints" / "last.ckpt"
        fit = self.config_init[self.subcommand]
        if fit.get("ckpt_path") is None and last.is_file():
            check_same_model(last, self.model)
            if self.trainer.global_rank == 0:  # a line for the user, not chatter for the log
                print(f"mole train: resuming from {last}", flush=True)
            fit["ckpt_path"] = str(last)
        if fit.get("ckpt_path") is not None and "weights_only" in fit:
            fit["weights_only"] = True  # our checkpoints hold only tensors and plain containers

    def after_fit(self) -> None:
        """Close this run's W&B run: wandb keeps one global run per process, and a later WandbLogger
        (the quickstart's next model, its report) would otherwise log into this one."""
        if wandb.run is not None and any(isinstance(lg, WandbLogger) for lg in self.trainer.loggers):
            wandb.finish()


def check_same_model(ckpt: Path, model: L.LightningModule) -> None:
    """Refuse, in one line, to resume `model` from a checkpoint of another one (a changed network
    option, e.g. self_condition, between two runs of one run_dir); Lightning would raise a traceback
    of missing keys. Only tensors are read (weights_only)."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    here = model.state_dict()
    differ = sorted(
        set(saved) ^ set(here) | {n for n in set(saved) & set(here) if saved[n].shape != here[n].shape}
    )
    if differ:
        raise ConfigError(
            "run_dir",
            f"{ckpt} is a checkpoint of another model ({len(differ)} tensors differ, e.g. {differ[0]}): "
            "rerun the command that started it, or choose another --run_dir",
        )


def _mole_error_in(error: BaseException) -> MoleError | None:
    """The MoleError that `error` wraps, if any: jsonargparse re-raises what an argument link's
    compute function raised (e.g. the data module's zoo error) as a ValueError `from` it. Only explicit
    causes are followed: an error raised while handling a MoleError is not that MoleError."""
    while error is not None:
        if isinstance(error, MoleError):
            return error
        error = error.__cause__
    return None


def cli_main(args: list[str] | None = None) -> MoleCLI:
    """Run `fit` with LightningCLI; `args` are what follows `mole train` (CONFIG first, if any).

    A MoleError raised inside LightningCLI (an argument link, a class's init) comes out unwrapped,
    so `mole train` reports it in one line like every other command.
    """
    args = list(args or [])
    if args and not args[0].startswith("-") and args[0] not in ("fit", "validate", "test"):
        args = ["--config", args[0], *args[1:]]
    if not args or args[0] not in ("fit", "validate", "test"):
        args = ["fit", *args]
    with warnings.catch_warnings():
        # `mole train` hands LightningCLI its own argv; LightningCLI warns when sys.argv holds more.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        try:
            return MoleCLI(
                L.LightningModule,
                ZooDataModule,
                subclass_mode_model=True,
                args=args,
                save_config_kwargs={"overwrite": True},
                seed_everything_default=0,
                trainer_defaults={"accelerator": "auto"},
                parser_kwargs={"prog": "mole train"},
            )
        except Exception as e:
            mole_error = _mole_error_in(e)
            if mole_error is None or mole_error is e:
                raise
            raise mole_error from None


if __name__ == "__main__":
    import sys

    cli_main(sys.argv[1:])
