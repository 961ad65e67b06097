r"""Trains any model of vlogger_jax; the config names the task.

  python launch/train.py --config=configs/toy.py:tiny --workdir=workdir/toy
  python launch/train.py --config=configs/toy.py --config.optimizer.lr=3e-4 --workdir=...

Rerunning the same command resumes from the workdir's latest checkpoint (of whichever stage was
interrupted, for configs that chain stages: vlogger_jax/train/stages.py). SIGTERM (or Ctrl-C)
saves a checkpoint and exits cleanly. Several processes (multi-host) are started with
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set, or with --multihost on TPU pods.
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from vlogger_jax import checkpoint
from vlogger_jax import cli
from vlogger_jax import fileio
from vlogger_jax.train import config_lib, loop, stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/toy.py:tiny.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() with autodetection (TPU pods).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax narrates every save at INFO
  config = _CONFIG.value
  try:
    config_lib.validate(config, "--config")
    fileio.check_output_folder(_WORKDIR.value, "--workdir")
    loop.maybe_initialize_distributed(force=_MULTIHOST.value)
    stages.run(config, _WORKDIR.value)
  except (ValueError, OSError, loop.TrainingDiverged, checkpoint.CheckpointError) as e:
    cli.report(e)
    return 1
  return 0


if __name__ == "__main__":
  if (problem := config_lib.preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  cli.run(main)
