"""Picking the cell (architecture, shape, task) a prompt asks of a mixed model: by architecture,
task, variant or arch_options; unknown, unseen and ambiguous prompts are one-line errors naming them."""

from __future__ import annotations

import pytest

from mole.diffusion.cells import cell_seed, cells_of, one_cell, pick
from mole.errors import ConfigError

DIGITS = {"input_shape": [1, 8, 8], "num_classes": 10}
MNIST1D = {"input_shape": [1, 40], "num_classes": 10}
META = {
    "conditions": {
        "test_acc": {"kind": "continuous", "min": 0.1, "max": 0.9},
        "architecture": {"kind": "categorical", "vocab": ["cnn", "mlp", "resnet"]},
        "task": {"kind": "categorical", "vocab": ["digits", "mnist1d"]},
        "variant": {"kind": "categorical", "vocab": ["dense", "magnitude", "neuron_pruned"]},
    },
    "cells": [
        {"architecture": "cnn", "arch_config": {**DIGITS, "channels": [2], "hidden": [4], "kernel_size": 3},
         "task": "digits", "task_options": {}, "variants": ["dense"]},
        {"architecture": "mlp", "arch_config": {**DIGITS, "hidden": [8]}, "task": "digits",
         "task_options": {}, "variants": ["neuron_pruned"]},
        {"architecture": "mlp", "arch_config": {**DIGITS, "hidden": [16]}, "task": "digits",
         "task_options": {}, "variants": ["dense"]},
        {"architecture": "mlp", "arch_config": {**DIGITS, "hidden": [32, 32]}, "task": "digits",
         "task_options": {}, "variants": ["dense"]},
        {"architecture": "mlp", "arch_config": {**MNIST1D, "hidden": [8, 8]}, "task": "mnist1d",
         "task_options": {"num_samples": 400}, "variants": ["dense"]},
    ],
}  # fmt: skip


def test_a_prompt_picks_its_cell_and_is_told_it():
    prompt = {"architecture": "cnn", "test_acc": 0.5}
    assert pick(META, prompt) == 0
    assert prompt == {"architecture": "cnn", "task": "digits", "test_acc": 0.5}  # the task is filled in
    prompt = {"task": "mnist1d"}
    assert pick(META, prompt) == 4 and prompt["architecture"] == "mlp"
    narrow = {"architecture": "mlp", "task": "digits", "variant": "neuron_pruned"}
    assert pick(META, narrow) == 1  # neuron_pruned members are the narrower shape
    shape = {"architecture": "mlp", "variant": "dense", "arch_options": {"hidden": [32, 32]}}
    assert pick(META, shape) == 3 and "arch_options" not in shape and shape["task"] == "digits"


@pytest.mark.parametrize(
    "prompt, message",
    [
        ({"architecture": "transformer"}, r"^conditions\.architecture: unknown value 'transformer'; valid: cnn"),
        ({"task": "cifar10"}, r"^conditions\.task: unknown value 'cifar10'; valid: digits, mnist1d$"),
        ({"architecture": "resnet"}, r"^conditions\.architecture: the model never trained on 'resnet'; it saw cnn, mlp$"),
        ({"architecture": "cnn", "task": "mnist1d"},
         r'^conditions: the model never trained on a network of architecture="cnn", task="mnist1d"; it saw cnn '),
        ({"architecture": "mlp", "arch_options": {"hidden": [64]}}, r'arch_options=\{"hidden": \[64\]\}; it saw'),
        ({"architecture": "cnn", "variant": "magnitude"}, r'variant="magnitude"; it saw cnn .* \(dense\); mlp'),
        ({"architecture": "mlp", "task": "digits", "variant": "dense"},
         r'^conditions: 2 shapes fit architecture="mlp", task="digits", variant="dense": prompt one by '
         r'architecture, task, variant or arch_options: mlp \{"hidden": \[16\]\} on digits \(dense\); '
         r'mlp \{"hidden": \[32, 32\]\} on digits \(dense\)$'),
        ({"arch_options": "wide"}, r"^conditions\.arch_options: must be a mapping of options"),
    ],
)  # fmt: skip
def test_unknown_unseen_and_ambiguous_prompts_are_one_line_errors(prompt, message):
    with pytest.raises(ConfigError, match=message) as error:
        pick(META, dict(prompt))
    assert "\n" not in str(error.value)


def test_one_generated_zoo_holds_one_cell():
    assert (
        one_cell(META, [{"architecture": "cnn"}, {"architecture": "cnn", "test_acc": 0.3}])
        == (META["cells"][0])
    )
    with pytest.raises(
        ConfigError, match=r"^conditions: a generated zoo holds one architecture and task, these"
    ):
        one_cell(META, [{"architecture": "cnn"}, {"task": "mnist1d"}])


def test_a_model_of_one_cell_and_an_old_model_folder():
    old = {
        "architecture": "mlp",
        "arch_config": {**DIGITS, "hidden": [16]},
        "task": "digits",
        "conditions": {},
    }
    assert cells_of(old)[0]["task"] == "digits" and cells_of(old)[0]["variants"] is None
    assert pick(old, {"variant": "anything"}) == 0  # variants unknown: no filter
    assert cell_seed(7, 0, 1) == 7  # one cell: the seed as given (the same networks as before)
    seeds = {cell_seed(7, i, 3) for i in range(3)} | {cell_seed(8, 0, 3)}
    assert len(seeds) == 4
