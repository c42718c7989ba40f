"""Fixtures shared by the test modules that train or load the `tiny` model."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    # the tiny model gains nothing from a second thread, and on a shared 2-core machine two spinning
    # OpenMP threads per process make a step ~6x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A private cache folder, and no $ULMA_DATA_DIR: the test names its data itself."""
    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ULMA_DATA_DIR", raising=False)
