"""Equivalent mutants of ``evaluation`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""
