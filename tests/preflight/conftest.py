"""Fixtures of the preflight tests."""

from __future__ import annotations

import pytest
from preflight_utils import Server


@pytest.fixture
def server():
    """A fresh HTTP server on 127.0.0.1 for one test."""
    s = Server()
    yield s
    s.close()
