"""The PyTorch side of the model: backbone registry, surgery rewrite, text encoding.

Needs the ``export`` extra (torch, open_clip_torch).
"""
