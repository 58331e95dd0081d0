"""Fixtures shared by the unit tests (data lives in factories.py)."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from factories import SHARED, WIDE, example_dict, make_config
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from hvrouter.config import Config

# No example database, and hypothesis' caches in pytest's temporary directory:
# a unit run leaves nothing behind in the source tree.
settings.register_profile("unit", database=None)
settings.load_profile("unit")
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="hvrouter-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)  # before collection: @given writes caches


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture
def example_cfg() -> Config:
    return make_config(example_dict())


@pytest.fixture
def wide_cfg() -> Config:
    return make_config(WIDE)


@pytest.fixture
def shared_cfg() -> Config:
    return make_config(SHARED)
