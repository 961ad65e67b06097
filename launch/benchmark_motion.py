r"""Times motion generation: seconds of audio -> motion, DDPM-1000 with guidance and DDIM.

  python launch/benchmark_motion.py --config=configs/motion.py --seconds=10 --out=motion.json

Parameters are freshly initialised (speed does not depend on training). Compile time is reported
apart; the figure is the median of --repeats timed calls after one warm-up.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Motion config.", lock_config=True)
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Audio length.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls.")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Motion samples drawn at once.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import functools
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np

  from vlogger_jax import audio as audio_lib
  from vlogger_jax.train.tasks.motion import MotionTask

  task = MotionTask(_CONFIG.value)
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  n = int(_SECONDS.value * audio_lib.SAMPLE_RATE)
  wave = np.random.default_rng(0).normal(size=n).astype(np.float32) * 0.1
  mel = audio_lib.mel_features(jnp.asarray(wave))
  rows = []
  for name, kw in [("ddpm-1000, cfg", dict(sampler="ddpm", guidance=5.0)),
                   ("ddim-50, cfg", dict(sampler="ddim", num_steps=50, guidance=5.0)),
                   ("ddpm-1000, no cfg", dict(sampler="ddpm", guidance=1.0))]:
    gen = jax.jit(functools.partial(task.generate, num_samples=_SAMPLES.value, **kw))
    t = time.perf_counter()
    gen(params, mel, jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - t
    times = []
    for i in range(_REPEATS.value):
      t = time.perf_counter()
      gen(params, mel, jax.random.PRNGKey(i + 1)).block_until_ready()
      times.append(time.perf_counter() - t)
    rows.append({"sampler": name, "frames": int(mel.shape[0]), "samples": _SAMPLES.value,
                 "compile_s": compile_s, "median_s": float(np.median(times))})
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"device: {device}, config {_CONFIG.value.variant}, {_SECONDS.value:g} s of audio")
  for r in rows:
    print(f"{r['sampler']:<20} frames {r['frames']:>5}  compile {r['compile_s']:7.2f} s  "
          f"median {r['median_s']:8.4f} s")
  if _OUT.value:
    from vlogger_jax import fileio
    fileio.write_json(_OUT.value, {"command": " ".join(sys.argv), "device": device, "rows": rows})


if __name__ == "__main__":
  from vlogger_jax.train.config_lib import preflight
  if (problem := preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  app.run(main)
