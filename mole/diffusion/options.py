"""SampleOptions: how networks are drawn from a model folder, shared by `mole sample`, generated zoos
and the quickstart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mole.errors import ConfigError, check_choice, check_int
from mole.zoo.pruning import SCOPES
from mole.zoo.variants.supermask import INITS

SPACINGS = ("leading", "trailing", "linspace")  # diffusers' DDIMScheduler timestep_spacing


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


@dataclass(frozen=True)
class SampleOptions:
    """How to draw networks (what to draw, the conditions and their number, is given beside it).

    Args:
        steps: DDIM steps of a weights model (a mask model takes one pass); unset (null): the model
            kind's, one for a G.pt pairs model (its update follows the prompt best read as one x0,
            ledger L37), 50 for any other.
        guidance: classifier-free guidance scale g: pred = uncond + g * (cond - uncond);
            1: conditional only, 0: unconditional.
        seed: seeds the noise and the drawn frozen inits; a seed gives the same networks bit for
            bit on one machine, and network i's noise does not depend on batch_size.
        batch_size: networks per model call.
        temperature: scale of a weights model's initial noise, in [0, 2] (DDIM is deterministic after
            it): 1 samples the learned distribution; below 1 trades diversity for typicality (0: every
            network of one prompt is the same, the model's most central one).
        scope: ranking for the prompted sparsity, "global" or "layerwise"; None: the model kind's
            (layerwise for masks, as edge-popup; global for weights, as the zoo's magnitude variant).
        init_scheme: frozen init drawn per network for a mask model when no context members are given
            (mole.zoo.variants.supermask.INITS).
        channels: a weights model trained on sparse, quantized or low-rank rows also generates mask
            bits, codes + scales or factors; true reads a prompted sparsity, bit-width or rank from
            those channels (top-k of the mask channel, codes snapped onto the grid, U V). False
            (default): from its generated weights, made exact by magnitude top-k, post-training
            quantization or truncated SVD, which measured better (ledger C3, C28).
        extrapolate: allow accuracy prompts above the trained range (up to 1) and loss prompts below
            it (down to 0): past the zoo's best, where the model saw no member (B12 measures it).
        guidance_interval: [lo, hi], the training timesteps (0 = clean) at which `guidance` applies;
            elsewhere the prediction is the conditional one (scale 1), as in Kynkaanniemi et al.
            2024, "Applying guidance in a limited interval". None: every step. Guidance at low noise
            breaks a net's fine weights, at high noise it steers which net is drawn (ledger L18).
        timestep_spacing: where DDIM's `steps` timesteps lie (diffusers' `timestep_spacing`):
            "leading" (0, 1000/steps, ...: with 5 steps the first call is at t=800, where pure noise is
            read as if it held signal), "trailing" (..., 999: the first call at the last training
            timestep, Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed")
            or "linspace". Measured on two matrix cells (ledger X13): trailing makes a one-step draw a
            network instead of noise; at the recipe's 5 steps it moved B2 and B3 by at most 0.07.
            Unset (null): the model kind's, "trailing" for a pairs model, "leading" for any other.
    """

    steps: int | None = None
    guidance: float = 1.0
    seed: int = 0
    batch_size: int = 64
    temperature: float = 1.0
    scope: str | None = None
    init_scheme: str = "signed_constant"
    channels: bool = False
    extrapolate: bool = False
    guidance_interval: tuple[int, int] | None = None
    timestep_spacing: str | None = None

    def __post_init__(self):
        if self.steps is not None:
            check_int(self.steps, "steps")
        if not _number(self.guidance):
            raise ConfigError("guidance", f"must be a number, got {self.guidance!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be an integer >= 0, got {self.seed!r}")
        check_int(self.batch_size, "batch_size")
        if not _number(self.temperature) or not 0 <= self.temperature <= 2:
            raise ConfigError("temperature", f"must be a number in [0, 2], got {self.temperature!r}")
        if self.scope is not None:
            check_choice(self.scope, SCOPES, "scope")
        for name in ("channels", "extrapolate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.guidance_interval is not None:
            interval = self.guidance_interval
            ints = (
                isinstance(interval, (list, tuple))
                and len(interval) == 2
                and all(isinstance(t, int) and not isinstance(t, bool) for t in interval)
            )
            if not ints or not 0 <= interval[0] <= interval[1]:
                raise ConfigError(
                    "guidance_interval",
                    f"must be two timesteps [lo, hi] with 0 <= lo <= hi, got {interval!r}",
                )
            object.__setattr__(self, "guidance_interval", tuple(interval))
        if self.timestep_spacing is not None:
            check_choice(self.timestep_spacing, SPACINGS, "timestep_spacing")
        check_choice(self.init_scheme, INITS, "init_scheme")

    def resolved(self, pairs: bool = False) -> SampleOptions:
        """These options with `steps` and `timestep_spacing` left unset (None) set to the model kind's:
        one trailing step for a pairs model (`mole bench learn`'s draw: relative error 0.023 against
        0.076 at 20 leading steps, ledger L37), 50 leading steps for any other. Set ones stay."""
        steps, spacing = (1, "trailing") if pairs else (50, "leading")
        return replace(
            self,
            steps=steps if self.steps is None else self.steps,
            timestep_spacing=spacing if self.timestep_spacing is None else self.timestep_spacing,
        )

    def recorded(self) -> dict:
        """What a benchmark's JSON keeps of how its draws were made: every option that changes a
        weights model's draws (steps, guidance and where it applies, the timestep spacing, the noise's
        temperature and seed), so two runs' figures can be told apart by their files alone."""
        keys = ("steps", "guidance", "guidance_interval", "timestep_spacing", "temperature", "seed")
        return {k: getattr(self, k) for k in keys}


def pairs_model(meta: Mapping) -> bool:
    """Whether a model folder's meta.json is a G.pt pairs weights model (it updates a start)."""
    return meta.get("mode") == "pairs" and meta.get("target") != "mask"


CANDIDATE_KEYS = ("steps", "timestep_spacing")  # what one candidate of a `weights.steps` list may set


def check_candidates(candidates: Any, field: str = "steps") -> list:
    """A non-empty list of DDIM step candidates, else a ConfigError on `field`: each a count (an
    integer >= 1, at the recipe's spacing) or a mapping of `steps` and, optionally,
    `timestep_spacing` (e.g. {steps: 1, timestep_spacing: trailing})."""

    def count(c: Any) -> bool:
        return isinstance(c, int) and not isinstance(c, bool) and c >= 1

    def good(c: Any) -> bool:
        if isinstance(c, Mapping):
            return (
                "steps" in c and set(c) <= set(CANDIDATE_KEYS) and count(c["steps"])
                and c.get("timestep_spacing", "leading") in SPACINGS
            )  # fmt: skip
        return count(c)

    if not isinstance(candidates, (list, tuple)) or not candidates or not all(map(good, candidates)):
        raise ConfigError(
            field,
            "candidates must be a non-empty list of step counts (integers >= 1) or "
            f"{{steps, timestep_spacing}} mappings, got {candidates!r}",
        )
    return list(candidates)


def check_sample_recipe(sample: Mapping[str, Any], where: str) -> None:
    """A sampling recipe's `weights` and `masks` options (configs/quickstart/sample.yaml) validated
    as `SampleOptions`, so that a bad key or value stops the run at load, not after the models have
    trained. `weights.steps` may be a list of candidates (`recipe_steps`); `where` names the file(s)."""
    for part in ("weights", "masks"):
        options = sample.get(part)
        if not isinstance(options, dict):
            raise ConfigError(
                f"sample.{part}", f"must be a mapping of sampling options ({where}), got {options!r}"
            )
        try:
            steps = options.get("steps", 1)
            if part == "weights" and isinstance(steps, list):
                first = check_candidates(steps)[0]
                steps = first["steps"] if isinstance(first, Mapping) else first
            SampleOptions(**{**options, "steps": steps})
        except ConfigError as e:
            raise ConfigError(f"sample.{part}.{e.field}", f"{str(e).split(': ', 1)[1]} ({where})") from None
        except TypeError:  # an option SampleOptions does not take
            valid = ", ".join(f.name for f in fields(SampleOptions))
            unknown = next(k for k in options if k not in {f.name for f in fields(SampleOptions)})
            raise ConfigError(
                f"sample.{part}.{unknown}", f"unknown option ({where}); valid: {valid}"
            ) from None
