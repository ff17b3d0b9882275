"""Fixtures shared with tests/models: tiny transformers models saved once per session."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from tiny import tiny_hf  # noqa: E402

pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory):
    """saved_tiny(name) -> (transformers model, folder it was saved to)."""
    cache = {}

    def get(name):
        if name not in cache:
            model, _ = tiny_hf(name)
            folder = tmp_path_factory.mktemp(name)
            model.save_pretrained(folder)
            cache[name] = (model, folder)
        return cache[name]
    return get
