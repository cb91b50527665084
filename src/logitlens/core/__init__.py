"""Core: what every other layer stands on and that needs no model: row specs, the statistics registry,
token naming, the torch-only decode and reduce kernels, atomic files and the version.

Imports nothing above itself (checked by the import-linter contract in pyproject.toml).
"""
