"""Data: the clip format (schema), synthetic clips, the record format (records), the TFDS builders
(builders), dataset statistics (statistics), finding a dataset (paths), the motion-window sampler
(windows), grain pipelines (pipelines) and in-memory motion batches (motion_bank).

Import the submodules themselves (`from vlogger_jax.data import pipelines`); this package imports
nothing, so a data worker process does not load JAX or TFDS it does not need.
"""
