"""Fixtures shared by several test modules."""

import os

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids thread hand-off costs on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: The store named by the environment pytest started in (the user's, or none).
_USERS_STORE = os.environ.get("COVNOISE_STORE")


@pytest.fixture(autouse=True)
def scratch_default_store(tmp_path_factory, monkeypatch):
    """Commands that record runs in the default store (`covnoise train`) write to a scratch
    store, never to the user's own (a store a module's fixture chose is left alone)."""
    if os.environ.get("COVNOISE_STORE") == _USERS_STORE:
        path = tmp_path_factory.mktemp("store") / "runs.sqlite"
        monkeypatch.setenv("COVNOISE_STORE", str(path))
