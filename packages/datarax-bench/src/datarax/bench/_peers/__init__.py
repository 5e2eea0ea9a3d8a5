"""Peer adapters (Grain, tf.data, PyTorch, SPDL, HF datasets); each imports its peer lazily."""
