"""Fixtures for the model tests: a tiny trained checkpoint (CPU, seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lse_panel.model.training import train_model
from model_fixtures import TINY_TRAIN, tiny_data


@pytest.fixture(scope="session")
def _tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    train_model(out, data=tiny_data(400), **TINY_TRAIN)
    return out


@pytest.fixture
def tiny_checkpoint(_tiny_checkpoint, tmp_path) -> Path:
    """A fresh copy of a tiny trained checkpoint directory (tests may damage it)."""
    out = tmp_path / "tiny"
    shutil.copytree(_tiny_checkpoint, out)
    return out
