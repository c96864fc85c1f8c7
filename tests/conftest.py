"""Shared pytest configuration: fixtures for real services live in tests/fixtures/."""

import pytest

pytest_plugins = ["tests.fixtures.chain", "tests.fixtures.kds", "tests.fixtures.services"]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (make test): each module runs whole in one
    process, so its module fixtures start once and its tests keep their order. The modules
    that boot QEMU guests (all of tests/e2e, and those marked `guests`) share one group: TCG
    guests on both cores at once would run their boots against timeouts at half speed, and
    they build the one shared guest image."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        guests = module.startswith("tests/e2e/") or item.get_closest_marker("guests") is not None
        item.add_marker(pytest.mark.xdist_group("guests" if guests else module))
