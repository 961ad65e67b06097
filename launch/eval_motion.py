r"""Evaluates a trained motion model on held-out clips: mouth correlation, LME, jitter, diversity.

  python launch/eval_motion.py --config=configs/motion.py --workdir=workdir/motion \
      [--sampler=ddim --num_steps=50 --guidance=5] [--num_clips=32] [--out=eval.json]

Restores the workdir's latest checkpoint (EMA parameters when the run kept them) and prints the
metrics of vlogger_jax/motion_eval.py averaged over clips of the dataset's test split.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 32, "Held-out clips to evaluate.")
_SAMPLER = flags.DEFINE_string("sampler", None, "ddpm | ddim (default: the config's).")
_STEPS = flags.DEFINE_integer("num_steps", None, "DDIM steps (default: the config's).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Guidance weight (default: the config's).")
_OUT = flags.DEFINE_string("out", None, "Write the metrics as JSON here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import json

  import jax

  from vlogger_jax.train import checkpoint, loop

  config = _CONFIG.value
  trainer = loop.Trainer(config)
  ckpt = checkpoint.Checkpointer(_WORKDIR.value, keep=config.checkpoint.keep)
  step = ckpt.latest_step()
  if step is None:
    sys.exit(f"error: no checkpoint in {ckpt.directory}; train first with launch/train.py.")
  state, _ = ckpt.restore(step, trainer.abstract_state)
  ckpt.close()
  overrides = {k: v for k, v in (("sampler", _SAMPLER.value), ("num_steps", _STEPS.value),
                                 ("guidance", _GUIDANCE.value)) if v is not None}
  metrics = trainer.task.evaluate(trainer.eval_params(state), jax.random.PRNGKey(0),
                                  num_clips=_NUM_CLIPS.value, **overrides)
  metrics = {"step": step, **overrides, **metrics}
  print(json.dumps(metrics, indent=1))
  if _OUT.value:
    from vlogger_jax import fileio
    fileio.write_json(_OUT.value, metrics)


if __name__ == "__main__":
  from vlogger_jax.train.config_lib import preflight
  if (problem := preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  app.run(main)
