"""SampleOptions: defaults, and a one-line error naming the field for every bad value."""

from __future__ import annotations

import dataclasses

import pytest

from mole.diffusion.options import SampleOptions
from mole.errors import ConfigError


def test_defaults_and_frozen():
    o = SampleOptions()
    assert (o.steps, o.guidance, o.seed, o.batch_size, o.temperature, o.scope, o.init_scheme) == (
        50, 1.0, 0, 64, 1.0, None, "signed_constant",
    )  # fmt: skip
    assert (
        SampleOptions(scope="layerwise", init_scheme="normal", temperature=0, guidance=0).scope == "layerwise"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.steps = 3


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
