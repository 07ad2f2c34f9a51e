"""MNIST-1D: generated offline by the mnist1d package, deterministic, split as promised."""

from __future__ import annotations

import random
import socket
import urllib.request

import numpy as np
import pytest
import requests
import torch

from mole.data import TASKS, load_task
from mole.errors import ConfigError


@pytest.fixture(scope="module")
def network_calls():
    """Every way the package (or anything under it) could reach the network raises and is recorded."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests, "get", refuse)
        mp.setattr(requests.Session, "request", refuse)
        mp.setattr(urllib.request, "urlopen", refuse)
        mp.setattr(socket.socket, "connect", refuse)
        yield calls


@pytest.fixture(scope="module")
def mnist1d(network_calls):
    return load_task("mnist1d")


def test_loads_offline(mnist1d, network_calls):
    assert "mnist1d" in TASKS.names()
    assert mnist1d.name == "mnist1d" and network_calls == []


def test_splits_shapes_and_labels(mnist1d):
    assert mnist1d.input_shape == (1, 40) and mnist1d.num_classes == 10
    # the generator's 4000 / 1000 cut, 10% of its training part held out for validation
    assert (len(mnist1d.y_train), len(mnist1d.y_val), len(mnist1d.y_test)) == (3600, 400, 1000)
    for x, y in (mnist1d.split(s) for s in ("train", "val", "test")):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 40)
        assert y.min() == 0 and y.max() == 9
    assert mnist1d.y_train.bincount().min() > 300  # every class is there in numbers
    everything = torch.cat([mnist1d.x_train, mnist1d.x_val, mnist1d.x_test])
    assert abs(float(everything.mean())) < 1e-3 and abs(float(everything.std()) - 1) < 1e-2  # standardised
    rows = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731
    assert not rows(mnist1d.x_test) & rows(mnist1d.x_train) and not rows(mnist1d.x_val) & rows(
        mnist1d.x_train
    )


def test_deterministic_and_seeded(network_calls):
    a, b = load_task("mnist1d", num_samples=200), load_task("mnist1d", num_samples=200)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(load_task("mnist1d", num_samples=200, seed=7).x_test, a.x_test)
    other_split = load_task("mnist1d", num_samples=200, split_seed=1)
    assert torch.equal(other_split.x_test, a.x_test) and not torch.equal(other_split.y_val, a.y_val)
    assert network_calls == []


def test_global_random_state_is_left_alone():
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    load_task("mnist1d", num_samples=100)
    assert (random.random(), np.random.rand()) == expected


@pytest.mark.parametrize(
    "options,field",
    [
        ({"num_samples": 55}, "task_options.num_samples"),
        ({"num_samples": 10}, "task_options.num_samples"),
        ({"num_samples": 100.0}, "task_options.num_samples"),
        ({"seed": -1}, "task_options.seed"),
        ({"val_fraction": 1.0}, "task_options.val_fraction"),
        ({"url": "http://example.com"}, "task_options"),
    ],
)
def test_bad_options_are_one_line_errors(options, field):
    with pytest.raises(ConfigError, match=field) as e:
        load_task("mnist1d", **options)
    assert "\n" not in str(e.value)
