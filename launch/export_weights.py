r"""Writes a trained model's inference weights and config to one file (.npz).

  python launch/export_weights.py --run=workdir/motion --out=motion.npz
  python launch/export_weights.py --run=workdir/base128_demo --out=base128.npz --dtype=bfloat16
  python launch/export_weights.py --run=motion.npz --out=motion.npz \
      --sampling=sampler=ddim,num_steps=50,guidance=1     # new generation defaults

The file holds what generation needs and nothing else (the EMA parameters where the run kept
them, the frozen ones, the motion statistics, the run's config): launch/generate.py takes it
wherever it takes a run directory (--motion, --video). The shipped default weights in
vlogger_jax/assets/weights/ were written by this command.
"""

import os

from absl import flags, logging
import jax

from vlogger_jax import cli
from vlogger_jax.models import loading
from vlogger_jax.models import weights

_RUN = flags.DEFINE_string("run", None, "Run directory (or one checkpoint) to export.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "Output weights file (.npz).")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32", "keep"],
                           "Stored float dtype ('keep': each parameter's own).")
_SAMPLING = flags.DEFINE_list("sampling", [], "key=value pairs that replace fields of "
                              "config.sampling, the generation defaults the file carries.")
flags.mark_flags_as_required(["run", "out"])


def _sampling(config, pairs):
  """config with config.sampling fields replaced from 'key=value' strings (typed as before)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for pair in pairs:
      key, sep, value = pair.partition("=")
      if not sep or key not in config.sampling:
        raise ValueError(f"--sampling '{pair}' is not key=value with a key of config.sampling "
                         f"({', '.join(sorted(config.sampling))}).")
      old = config.sampling[key]
      try:
        config.sampling[key] = type(old)(value) if not isinstance(old, bool) else (
            value.lower() in ("1", "true", "yes"))
      except ValueError:
        raise ValueError(f"--sampling {key}={value!r} is not a {type(old).__name__} like its "
                         f"current value {old!r}.") from None
  return config


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    loaded = loading.load(_RUN.value, step=_STEP.value, device=jax.devices("cpu")[0])
    dtype = None if _DTYPE.value == "keep" else _DTYPE.value
    config = _sampling(loaded.config, _SAMPLING.value)
    path = weights.save(_OUT.value, config, loaded.params, loaded.step, dtype=dtype,
                        source=os.path.abspath(loaded.workdir))
  except (ValueError, OSError) as e:   # LoadError and WeightsError are ValueErrors
    return cli.report(e)
  count = sum(a.size for a in jax.tree.leaves(loaded.params))
  print(f"wrote {path}: {loaded.config.task} model, step {loaded.step}, {count / 1e6:.2f} M "
        f"parameters, {os.path.getsize(path) / 2**20:.1f} MiB")
  return 0


if __name__ == "__main__":
  cli.run(main)
