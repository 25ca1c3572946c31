"""Shared fixtures and markers. Helpers that tests import live in tests/support/ (this folder
is on sys.path because this conftest.py sits at its top)."""
