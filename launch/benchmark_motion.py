r"""Times motion generation: seconds of audio -> motion, DDPM with and without guidance, DDIM-50.

  python launch/benchmark_motion.py --config=configs/motion.py --seconds=10 --out=motion.json
  python launch/benchmark_motion.py --config=configs/motion.py:tiny --seconds=2 --repeats=1

Builds the config's MotionModel with freshly initialised parameters and identity statistics
(speed does not depend on training): no dataset is opened or built. The input is the mel features
of --seconds of noise, broadcast to --samples sequences generated in one call with one key each.
For each sampler it prints the first call's time (compilation included) apart from the median of
--repeats timed calls (vlogger_jax/timing.py); --out writes the same rows as JSON. The figures
measured so far, with their commands, are in BENCHMARKS.md.
"""

import sys

from absl import flags, logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from vlogger_jax import audio as audio_lib
from vlogger_jax import cli
from vlogger_jax import fileio
from vlogger_jax import timing
from vlogger_jax import windowed_sampler
from vlogger_jax.models.motion import MotionModel
from vlogger_jax.train import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Motion config, e.g. "
                                          "configs/motion.py:tiny.", lock_config=True)
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Audio length.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls.")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Motion samples drawn at once.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
flags.mark_flags_as_required(["config"])

GUIDANCE = 5.0   # the paper's weight (configs/motion.py sampling.guidance)


def samplers(config) -> list[tuple[str, dict]]:
  """(row name, sampler overrides) of each timed sampler."""
  ddpm = f"ddpm-{config.diffusion.num_steps}"
  return [(f"{ddpm}, cfg", dict(sampler="ddpm", guidance=GUIDANCE)),
          ("ddim-50, cfg", dict(sampler="ddim", num_steps=50, guidance=GUIDANCE)),
          (f"{ddpm}, no cfg", dict(sampler="ddpm", guidance=1.0))]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if config.get("task") != "motion":
    print(f"error: --config is task '{config.get('task')}'; expected a motion config "
          "(configs/motion.py).", file=sys.stderr)
    return 1
  if _SECONDS.value <= 0 or _REPEATS.value < 1 or _SAMPLES.value < 1:
    print(f"error: --seconds {_SECONDS.value:g}, --repeats {_REPEATS.value}, --samples "
          f"{_SAMPLES.value}; expected positive values.", file=sys.stderr)
    return 1
  model = MotionModel(config)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0)))   # identity statistics
  count = sum(a.size for a in jax.tree.leaves(params["model"]))
  print(f"model initialised: {count:,} parameters, identity statistics", flush=True)
  n = int(_SECONDS.value * audio_lib.SAMPLE_RATE)
  wave = np.random.default_rng(0).normal(size=n).astype(np.float32) * 0.1
  mel = audio_lib.mel_features(jnp.asarray(wave))
  samples = _SAMPLES.value
  batch = jnp.broadcast_to(mel[None], (samples,) + mel.shape)
  keys = windowed_sampler.batch_keys(jax.random.PRNGKey(1), samples)
  rows = []
  for name, overrides in samplers(config):
    cfg = model.sampler_config(**overrides)
    first_s, times = timing.time_calls(model.jitted_generate, params, batch, keys, cfg,
                                       repeats=_REPEATS.value)
    rows.append({"sampler": name, "frames": int(mel.shape[0]), "samples": samples,
                 "compile_s": first_s, "median_s": timing.median(times)})
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"device: {device}, config {config.variant}, {_SECONDS.value:g} s of audio")
  for r in rows:
    print(f"{r['sampler']:<20} frames {r['frames']:>5}  compile {r['compile_s']:7.2f} s  "
          f"median {r['median_s']:8.4f} s")
  if _OUT.value:
    fileio.write_json(_OUT.value, {"command": " ".join(sys.argv), "device": device, "rows": rows})
  return 0


if __name__ == "__main__":
  if (problem := config_lib.preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  cli.run(main)
