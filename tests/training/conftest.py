"""Fixtures of the training tests: they live in tests/conftest.py (``tiny_config``, ``tiny_overrides``),
shared with the bad-input and search tests."""
