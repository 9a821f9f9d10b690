"""
pytest glue. The suite also runs under trial (the TestCase classes only).

trial's asynchronous TestCase spins the reactor itself, and fails once
pytest-twisted has started the reactor in its greenlet; so those tests run
first, before any pytest-twisted test.
"""

import pytest
from twisted.trial.unittest import TestCase


def _needs_own_reactor_spin(item) -> bool:
    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, TestCase)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if _needs_own_reactor_spin(item) else 1)


@pytest.fixture
def reactor():
    """The global reactor, which pytest-twisted runs (pytest-twisted has no fixture for it)."""
    from twisted.internet import reactor

    return reactor




@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """trial's mktemp() is relative to the working directory: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)
