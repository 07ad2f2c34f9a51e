"""Fixtures shared by the mask tests."""

from __future__ import annotations

import pytest

from tests.masks.helpers import build_mask_zoo


@pytest.fixture(scope="session")
def mask_zoo(tmp_path_factory):
    return build_mask_zoo(tmp_path_factory.mktemp("mask-zoo") / "zoo")


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A private `datasets` cache, so tests never touch the user's."""
    return str(tmp_path_factory.mktemp("masks-datasets-cache"))
