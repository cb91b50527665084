"""Engine: the logit lens itself. ``LogitLens`` (a thin facade) prepares inputs, plans batches, captures
rows through a backend, decodes them through a lens (identity or tuned) and reduces them to statistics in
a ``LensResult`` (with its JSON, Parquet and Arrow codecs).
"""
