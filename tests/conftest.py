"""Shared pytest configuration: fixtures for real services live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.chain", "tests.fixtures.kds", "tests.fixtures.services"]
