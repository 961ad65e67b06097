r"""Trains any model of vlogger_jax; the config names the task.

  python launch/train.py --config=configs/toy.py:tiny --workdir=workdir/toy
  python launch/train.py --config=configs/toy.py --config.optimizer.lr=3e-4 --workdir=...

Rerunning the same command resumes from the workdir's latest checkpoint. SIGTERM (or Ctrl-C)
saves a checkpoint and exits cleanly. Several processes (multi-host) are started with
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set, or with --multihost on TPU pods.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/toy.py:tiny.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() with autodetection (TPU pods).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax narrates every save at INFO
  from vlogger_jax.train import checkpoint, config_lib, loop  # after flags: keeps --help fast

  config = _CONFIG.value
  try:
    config_lib.validate(config, "--config")
    loop.maybe_initialize_distributed(force=_MULTIHOST.value)
    loop.train(config, _WORKDIR.value)
  except (ValueError, loop.TrainingDiverged, checkpoint.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  from vlogger_jax.train.config_lib import preflight
  if (problem := preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  app.run(lambda argv: sys.exit(main(argv)))
