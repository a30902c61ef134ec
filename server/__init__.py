"""The deployable companion server: plasma_nb's server engine configured from the environment.

Glue only (``main.py``); the engine is ``plasma_nb.server``. See README.md.
"""
