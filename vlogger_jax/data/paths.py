from vlogger_jax.data.builders import dataset_dir, resolve  # TEMP shim, replaced by the data-split merge
