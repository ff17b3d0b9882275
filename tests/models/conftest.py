"""The tiny transformers models of tests/models/tiny.py, saved once per session (fixture `saved_tiny`)."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))
from tiny import saved_tiny  # noqa: E402,F401  (a fixture: importing it into a conftest registers it)
