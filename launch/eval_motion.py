r"""Evaluates a trained motion model on held-out clips: mouth correlation, LME, jitter, diversity,
the mouth's opening range against the truth's, and bilabial closure.

  python launch/eval_motion.py --workdir=workdir/motion \
      [--sampler=ddim --num_steps=50 --guidance=5] [--num_clips=32] [--out=eval.json]
  python launch/eval_motion.py --workdir=workdir/motion --config=configs/motion.py \
      --config.data.data_dir=/elsewhere/data      # the same run, its dataset moved

Loads the model and its inference weights from the run's latest checkpoint with the config the
run saved (EMA parameters where it kept them; vlogger_jax/models/loading.py): no trainer or
optimizer state is built. It generates --num_clips clips of the test split of the run's dataset
(held-out identities), two samples each, and prints the metrics of evaluators.motion_scores
(vlogger_jax/motion_eval.py) averaged over clips, as JSON; --out writes them too. For synthetic
clips the phonemes are recomputed from each clip's seed (the generator is deterministic; the
script stops if a record's audio is not what the generator makes), giving eval/bilabial_closure:
the share of /p b m/ during which the generated lips close. --config is
optional: the saved config is the truth, and a given one only says where the dataset is now; if
it differs from the saved one in what shapes the model or its sampling (CHECKED_KEYS), the
script says where and stops.
"""

import json
import sys

from absl import flags, logging
import jax
from ml_collections import config_flags

from vlogger_jax import checkpoint
from vlogger_jax import cli
from vlogger_jax import evaluators
from vlogger_jax import fileio
from vlogger_jax.data import paths, pipelines, synthetic
from vlogger_jax.models import loading
from vlogger_jax.train import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional: the run's config, e.g. to "
                                          "say where its dataset is now (default: the config "
                                          "saved with the checkpoint).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 32, "Held-out clips to evaluate.")
_SAMPLER = flags.DEFINE_string("sampler", None, "ddpm | ddim | dpm (default: the config's).")
_STEPS = flags.DEFINE_integer("num_steps", None, "DDIM/DPM steps (default: the config's).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Guidance weight (default: the config's).")
_OUT = flags.DEFINE_string("out", None, "Write the metrics as JSON here.")
flags.mark_flags_as_required(["workdir"])

# What must match between --config and the checkpoint's own config for the numbers to mean
# what the user thinks they mean.
CHECKED_KEYS = ("task", "model", "diffusion", "data.max_frames", "data.absolute")
NUM_SAMPLES = 2   # samples per clip (the diversity metric compares them)


def data_config(loaded: loading.Loaded, given):
  """The config whose data section names the held-out dataset: --config when given (after
  checking it against the saved one), else the saved config."""
  if given is None:
    return loaded.config
  differ = loading.config_differences(loaded.config.to_dict(), given.to_dict(), CHECKED_KEYS)
  if differ:
    raise ValueError(f"--config differs from the config of checkpoint {loaded.step} in "
                     f"{loaded.workdir} at {', '.join(differ)}; expected the run's own config "
                     "(the same overrides as given to launch/train.py), or no --config.")
  return given


def held_out_records(config, num_clips: int) -> list:
  """The first `num_clips` records of the test split of config's dataset (None: unreadable)."""
  records = pipelines.open_records(paths.dataset_dir(config.data), "test")
  if not len(records):
    raise ValueError(f"the test split of {records.version_dir} is empty; expected held-out "
                     "clips to evaluate on.")
  return [records[i] for i in range(min(num_clips, len(records)))]


def bilabials(records) -> list | None:
  """Per record, the (start_s, end_s) of its /p b m/ (synthetic clips: recomputed from the seed,
  since records hold no phonemes); None when no record is synthetic."""
  out = [None if r is None else synthetic.bilabial_intervals(r["id"], len(r["expression"]),
                                                             r["audio"]) for r in records]
  if all(o is None for o in out):
    return None
  return [o or [] for o in out]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax narrates every restore at INFO
  overrides = {k: v for k, v in (("sampler", _SAMPLER.value), ("num_steps", _STEPS.value),
                                 ("guidance", _GUIDANCE.value)) if v is not None}
  try:
    if _NUM_CLIPS.value < 1:
      raise ValueError(f"--num_clips is {_NUM_CLIPS.value}; expected at least 1.")
    loaded = loading.load(_WORKDIR.value, expect=("motion",))
    records = held_out_records(data_config(loaded, _CONFIG.value), _NUM_CLIPS.value)
    metrics = evaluators.motion_scores(loaded.model, loaded.params, records,
                                       jax.random.PRNGKey(0), num_samples=NUM_SAMPLES,
                                       bilabials=bilabials(records), **overrides)
  except (ValueError, checkpoint.CheckpointError) as err:
    return cli.report(err)
  metrics = {"step": loaded.step, **overrides, **metrics}
  print(json.dumps(metrics, indent=1))
  if _OUT.value:
    fileio.write_json(_OUT.value, metrics)
  return 0


if __name__ == "__main__":
  if (problem := config_lib.preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  cli.run(main)
