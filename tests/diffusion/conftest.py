"""Fixtures shared by the diffusion tests."""

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private `datasets` cache, so tests never touch the user's."""
    return str(tmp_path_factory.mktemp("datasets-cache"))
