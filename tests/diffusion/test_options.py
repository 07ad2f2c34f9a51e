"""SampleOptions: defaults, and a one-line error naming the field for every bad value."""

from __future__ import annotations

import dataclasses

import pytest

from mole.diffusion.options import SampleOptions, check_sample_recipe
from mole.errors import ConfigError


def test_defaults_and_frozen():
    o = SampleOptions()
    assert (o.steps, o.guidance, o.seed, o.batch_size, o.temperature, o.scope, o.init_scheme) == (
        None, 1.0, 0, 64, 1.0, None, "signed_constant",
    )  # fmt: skip
    assert (
        SampleOptions(scope="layerwise", init_scheme="normal", temperature=0, guidance=0).scope == "layerwise"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.steps = 3


def test_unset_steps_and_spacing_are_the_model_kinds_and_set_ones_stay():
    o = SampleOptions()
    assert (o.steps, o.timestep_spacing) == (None, None)
    assert (o.resolved().steps, o.resolved().timestep_spacing) == (50, "leading")
    assert (o.resolved(pairs=True).steps, o.resolved(pairs=True).timestep_spacing) == (1, "trailing")
    given = SampleOptions(steps=5, timestep_spacing="leading", guidance=2.0).resolved(pairs=True)
    assert (given.steps, given.timestep_spacing, given.guidance) == (5, "leading", 2.0)
    assert SampleOptions(steps=3).resolved(pairs=True).timestep_spacing == "trailing"
    assert SampleOptions(timestep_spacing="linspace").resolved().steps == 50
    assert given.resolved() == given  # resolving twice changes nothing


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("steps", 0, "must be a positive integer, got 0"),
        ("steps", 2.5, "must be a positive integer, got 2.5"),
        ("guidance", "high", "must be a number, got 'high'"),
        ("guidance", True, "must be a number, got True"),
        ("seed", -1, "must be an integer >= 0, got -1"),
        ("batch_size", 0, "must be a positive integer, got 0"),
        ("temperature", -1, r"must be a number in \[0, 2\], got -1"),
        ("temperature", 2.5, r"must be a number in \[0, 2\], got 2.5"),
        ("scope", "rowwise", "unknown 'rowwise'; valid: global, layerwise"),
        ("init_scheme", "zeros", "unknown 'zeros'; valid: signed_constant, normal, kaiming_uniform"),
        ("timestep_spacing", "last", "unknown 'last'; valid: leading, trailing, linspace"),
        (
            "guidance_interval",
            (700, 300),
            r"must be two timesteps \[lo, hi\] with 0 <= lo <= hi, got \(700, 300\)",
        ),
        (
            "guidance_interval",
            [-1, 300],
            r"must be two timesteps \[lo, hi\] with 0 <= lo <= hi, got \[-1, 300\]",
        ),
        (
            "guidance_interval",
            (0.5, 300),
            r"must be two timesteps \[lo, hi\] with 0 <= lo <= hi, got \(0.5, 300\)",
        ),
    ],
)
def test_bad_values_name_their_field(field, value, message):
    with pytest.raises(ConfigError, match=f"^{field}: {message}$"):
        SampleOptions(**{field: value})


GOOD = {"weights": {"steps": 5, "guidance": 6.0}, "masks": {"steps": 5, "init_scheme": "signed_constant"}}


@pytest.mark.parametrize(
    "part, options, error",
    [
        ("weights", {"steps": 0}, r"^sample.weights.steps: must be a positive integer, got 0 \(f.yaml\)$"),
        ("weights", {"steps": [5, 0]}, r"^sample.weights.steps: candidates must be a non-empty list"),
        ("weights", {"steps": []}, r"^sample.weights.steps: candidates must be a non-empty list"),
        (
            "weights",
            {"stepz": 5},
            r"^sample.weights.stepz: unknown option \(f.yaml\); valid: steps, guidance",
        ),
        (
            "weights",
            {"timestep_spacing": "sideways"},
            r"^sample.weights.timestep_spacing: unknown 'sideways'",
        ),
        ("masks", {"steps": [5, 1]}, r"^sample.masks.steps: must be a positive integer, got \[5, 1\]"),
        ("masks", {"init_scheme": "nope"}, r"^sample.masks.init_scheme: unknown 'nope'"),
        ("masks", None, r"^sample.masks: must be a mapping of sampling options \(f.yaml\), got None$"),
    ],
)
def test_a_sampling_recipe_is_checked_whole_at_load(part, options, error):
    """A bad option stops the run before anything trains, naming the option and the file."""
    check_sample_recipe(GOOD, "f.yaml")  # the good recipe passes, and a candidate list of steps too
    check_sample_recipe({**GOOD, "weights": {**GOOD["weights"], "steps": [5, 1]}}, "f.yaml")
    bad = {**GOOD, part: None if options is None else {**GOOD[part], **options}}
    if part == "weights" and "stepz" in options:
        bad["weights"] = {"stepz": 5}
    with pytest.raises(ConfigError, match=error):
        check_sample_recipe(bad, "f.yaml")
