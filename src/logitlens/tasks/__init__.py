"""Tasks: work built on the engine: corpora, evaluation, streamed runs, attribution, concepts,
comparison, tuned-lens training, progress reporting and data-parallel runs.
"""
