"""Data: the clip format (schema), synthetic clips, TFDS builders and grain pipelines.

Import the submodules themselves (`from vlogger_jax.data import pipelines`); this package imports
nothing, so a data worker process does not load JAX or TFDS it does not need.
"""
