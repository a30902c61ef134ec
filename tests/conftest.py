"""Shared pytest fixtures for the plasma_nb test suite."""
