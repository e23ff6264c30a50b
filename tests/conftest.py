"""Suite-wide isolation: align.util.offline switches the process to offline mode when the Hub is away;
each test starts with no remembered probe and leaves the offline switches as it found them."""

from __future__ import annotations

import os
import sys

import pytest

_SWITCHES = (
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_DATASETS_OFFLINE"),
)


@pytest.fixture(autouse=True)
def _fresh_hub_probe(monkeypatch):
    import align.util.offline

    monkeypatch.setattr(align.util.offline, "_probed", {})
    env = os.environ.get("HF_HUB_OFFLINE")
    saved = [(m, n, getattr(sys.modules[m], n)) for m, n in _SWITCHES if m in sys.modules]
    yield
    if env is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = env
    for module, name, value in saved:
        setattr(sys.modules[module], name, value)
