"""Shared fixtures: every test writes under its own temporary data and reports directories."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Points LAB_DATA_DIR and LAB_REPORTS_DIR at fresh folders (nothing touches the repo)."""
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


@pytest.fixture(scope="session")
def digits():
    from lab.data.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_images():
    """60 random 8x8x3 uint8 images with labels 0..2 (20 each)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(60, 8, 8, 3), dtype=np.uint8), np.repeat(np.arange(3), 20)


@pytest.fixture
def quick_downloads(monkeypatch):
    """Downloads that give up within a second (0.3 s waits, one retry, 10 ms pauses) and no proxy
    from the machine's environment."""
    import lab.system.download

    monkeypatch.setenv("LAB_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("LAB_DOWNLOAD_RETRIES", "1")
    monkeypatch.setattr(lab.system.download, "BACKOFF_SECONDS", 0.01)
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def keras_cache(monkeypatch, tmp_path):
    """Keras' cache folder (``$KERAS_HOME``, read once when Keras is imported) under the test's folder."""
    from keras.src.backend import config

    (tmp_path / "keras_home").mkdir()  # Keras made it when imported; it falls back to /tmp/.keras otherwise
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


@pytest.fixture
def fault_server():
    """A loopback HTTP server misbehaving by path (``tests/download_servers.py``)."""
    from download_servers import fault_server as start

    with start() as server:
        yield server


@pytest.fixture
def silent_url():
    """The URL of a loopback socket that accepts connections and never answers."""
    from download_servers import silent_server

    with silent_server() as url:
        yield url
