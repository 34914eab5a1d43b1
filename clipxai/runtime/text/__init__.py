"""Text on the device: CLIP's BPE tokenizer, the bundle's text encoder and the class-encoding cache.

Used by bundles exported with ``--text-encoder``, whose vocabulary is a graph input.
"""
