"""Model: how a transformers model is found, loaded and read: the architecture table with discovery and
the load-time self-check, the decoder (final norm + unembedding + logit post-processing), loading options
(dtype, device maps, quantisation), model sources, the default model, capture backends and NDIF.
"""
