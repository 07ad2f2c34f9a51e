"""time_to_network: sampling seconds per network vs SGD steps to the same accuracy, on a hand-made trajectory."""

from __future__ import annotations

import json
import math

import pytest

from mole.errors import ConfigError
from mole.eval import EvalSet, build_evaluator

STEPS = [0, 10, 20, 30]
TRAJECTORIES = {  # member_id -> test_acc at STEPS
    "a": [0.1, 0.5, 0.8, 0.9],  # reaches 0.8 at step 20
    "b": [0.1, 0.3, 0.6, 0.7],  # never reaches 0.8
}
REFERENCE = [
    {"member_id": m, "variant": "dense", "step": s, "test_acc": acc}
    for m, accs in TRAJECTORIES.items()
    for s, acc in zip(STEPS, accs)
] + [{"member_id": "q", "variant": "quantized", "step": 0, "test_acc": 0.95}]  # not an SGD trajectory
GENERATED = [{"test_acc": 0.75}, {"test_acc": 0.85}]  # target accuracy 0.8


def run(members=GENERATED, reference=REFERENCE, **options) -> dict:
    return dict(build_evaluator("time_to_network", options)(EvalSet(members, reference)))


def test_hand_made_trajectory():
    out = run(sgd_seconds_per_step=0.01, sampling_seconds=0.1)
    assert out["target_acc"] == pytest.approx(0.8)
    assert out["sampling_s_per_net"] == pytest.approx(0.05)  # 0.1 s for 2 networks
    assert out["sgd_frac_reached"] == 0.5
    assert out["sgd_s_per_net"] == pytest.approx(0.2)  # 20 steps of member "a" at 0.01 s
    assert out["speedup"] == pytest.approx(4.0)


def test_sampling_time_from_the_members_extra_and_unreachable_targets():
    members = [{"test_acc": 0.92, "extra": json.dumps({"sampling_seconds": s})} for s in (0.1, 0.3)]
    out = run(members, sgd_seconds_per_step=0.01)
    assert out["sampling_s_per_net"] == pytest.approx(0.2)
    assert out["sgd_frac_reached"] == 0.0
    assert math.isnan(out["sgd_s_per_net"]) and math.isnan(out["speedup"])
    every = run(members, variant=None, sgd_seconds_per_step=0.01)  # the quantized row counts too
    assert every["sgd_frac_reached"] == pytest.approx(1 / 3)
    assert every["sgd_s_per_net"] == 0.0  # it is there at step 0


def test_missing_inputs_name_the_field():
    with pytest.raises(ConfigError, match=r"^eval\.time_to_network\.sgd_seconds_per_step: required"):
        build_evaluator("time_to_network")
    with pytest.raises(ConfigError, match=r"^eval\.time_to_network\.sgd_seconds_per_step: must be"):
        build_evaluator("time_to_network", {"sgd_seconds_per_step": -1})
    with pytest.raises(ConfigError, match=r"^eval\.time_to_network\.sampling_seconds: not given"):
        run(sgd_seconds_per_step=0.01)
