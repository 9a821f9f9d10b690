"""
Fixtures for the guest tests, which run inside the UML kernel (see tests/uml/README.md).
"""

import pytest
from simchip import header_chip, load_chips


@pytest.fixture
def header():
    """The Pi-like header chip, every line pulled low before and after the test."""
    chip = header_chip()
    chip.pull_all_low()
    yield chip
    chip.pull_all_low()


@pytest.fixture
def sim_chips():
    """Every gpio-sim chip init.sh made, by name."""
    return load_chips()
