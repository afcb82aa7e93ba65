"""Vision tests; a package so that its conftest and helpers do not collide with tests/conftest.py."""
