"""Liveness tests; a package so that its conftest and helpers do not collide with other test folders."""
