"""Fixtures of the kernel tests."""

import pytest
from ops_helpers import check_close


@pytest.fixture
def assert_close():
    return check_close
