"""Fixtures for the prediction tests (helpers live in predict_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from predict_fixtures import write_queue_model

from proxy.predict.model_holder import LoadedModel, ModelHolder, load_model


@pytest.fixture(scope="session")
def queue_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_queue_model(tmp_path_factory.mktemp("model") / "queue")


@pytest.fixture
def queue_model(queue_model_dir: Path) -> LoadedModel:
    return load_model(queue_model_dir, max_batch=64, ood_tolerance=0.25)


@pytest.fixture
def holder(queue_model: LoadedModel) -> ModelHolder:
    h = ModelHolder()
    h.swap(queue_model)
    return h
