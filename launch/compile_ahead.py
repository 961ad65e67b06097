r"""Compiles a config's train step ahead of time for meshes larger than this machine, and reports
what each device would hold: parameters, optimizer state, EMA, frozen weights and the compiled
step's temporary buffers (activations), with the collectives the shardings imply.

  python launch/compile_ahead.py --config=configs/base128.py --meshes=4x1,2x2,1x4,8x1,1x8 \
      --per_device_batch=16 --out=compile_ahead.json
  python launch/compile_ahead.py --config=configs/base128.py:tiny --meshes=2x1,1x2 --per_device_batch=2

On a CPU the script restarts itself with as many fake devices as the largest mesh needs
(XLA_FLAGS=--xla_force_host_platform_device_count), so no accelerator is needed: the shardings,
the per-device bytes and the compiled program are those of the real mesh; only the timings are
not. A mesh 'DxF' is `data` D × `fsdp` F (config.mesh.axes); the global batch is
--per_device_batch × D × F. Nothing is allocated: the state and the batch are abstract
(Trainer.abstract_state, with their shardings), `jax.jit(...).lower(...).compile()` builds the
program, and `compiled.memory_analysis()` gives the per-device buffer sizes. A video config
never loads a pre-trained image model (as in launch/benchmark.py). Figures: BENCHMARKS.md.
"""

import math
import os
import re
import sys
import time

from absl import flags, logging
import jax
from ml_collections import config_flags

from vlogger_jax import cli
from vlogger_jax import fileio
from vlogger_jax import models
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/base128.py.",
                                          lock_config=True)
_MESHES = flags.DEFINE_list("meshes", ["4x1", "2x2", "1x4"], "Meshes as DATAxFSDP.")
_PER_DEVICE = flags.DEFINE_integer("per_device_batch", 16, "Examples per device.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
flags.mark_flags_as_required(["config"])

_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def _size(n: int) -> str:
  for unit, scale in (("G", 2 ** 30), ("M", 2 ** 20), ("K", 2 ** 10)):
    if n >= scale:
      return f"{n / scale:7.2f}{unit}"
  return f"{n:7d}B"


def parse_meshes(values) -> list[tuple[int, int]]:
  """['4x1', '2x2'] -> [(4, 1), (2, 2)]; one sentence for anything else."""
  out = []
  for v in values:
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", v)
    if not m or 0 in (int(m.group(1)), int(m.group(2))):
      raise ValueError(f"--meshes entry '{v}' is not DATAxFSDP with positive sizes; expected "
                       "e.g. 4x1,2x2,1x4.")
    out.append((int(m.group(1)), int(m.group(2))))
  return out


def per_device_bytes(tree) -> int:
  """Bytes that the most loaded device holds of an abstract tree with shardings."""
  total = 0
  for a in jax.tree.leaves(tree):
    shard = a.sharding.shard_shape(a.shape) if a.sharding is not None else a.shape
    total += math.prod(shard) * a.dtype.itemsize
  return total


def collectives(hlo: str) -> dict:
  """How many of each collective the compiled program's text holds."""
  return {c: n for c in _COLLECTIVES if (n := len(re.findall(rf"\b{c}(?:-start)?\(", hlo)))}


def compile_mesh(config, data: int, fsdp: int, per_device: int) -> dict:
  """The figures of one mesh (module doc)."""
  n = data * fsdp
  cfg = config_lib.overridden(config, batch_size=per_device * n, **{"mesh.shape": (data, fsdp)})
  if models.kind(cfg) == "video":
    cfg = config_lib.overridden(cfg, pretrained="none")
  trainer = loop.Trainer(cfg, make_task(cfg), devices=jax.devices()[:n])
  state = trainer.abstract_state
  batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=trainer.batch_shardings[k])
           for k, s in trainer.abstract_batch.items()}
  t = time.perf_counter()
  compiled = trainer.train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  row = {"mesh": f"{data}x{fsdp}", "devices": n, "global_batch": cfg.batch_size,
         "compile_s": compile_s,
         "params_bytes": per_device_bytes(state.params),
         "frozen_bytes": per_device_bytes(state.frozen),
         "opt_state_bytes": per_device_bytes(state.opt_state),
         "ema_bytes": per_device_bytes(state.ema),
         "batch_bytes": per_device_bytes(batch),
         "collectives": collectives(compiled.as_text())}
  if mem is not None:
    row.update(temp_bytes=int(mem.temp_size_in_bytes),
               arguments_bytes=int(mem.argument_size_in_bytes),
               outputs_bytes=int(mem.output_size_in_bytes),
               aliased_bytes=int(mem.alias_size_in_bytes))
  return row


def _restart_with_devices(n: int) -> None:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={n}").strip(),
             VLOGGER_COMPILE_AHEAD_RESTARTED="1")
  os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected argument '{argv[1]}'; expected only --flags.", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  try:
    meshes = parse_meshes(_MESHES.value)
  except ValueError as e:
    return cli.report(e)
  if _PER_DEVICE.value < 1:
    return cli.report(f"--per_device_batch {_PER_DEVICE.value}; expected at least 1.")
  need = max(d * f for d, f in meshes)
  if jax.device_count() < need:
    if jax.devices()[0].platform == "cpu" and not os.environ.get("VLOGGER_COMPILE_AHEAD_RESTARTED"):
      _restart_with_devices(need)   # XLA reads the device count only when it starts
    return cli.report(f"the largest mesh needs {need} devices and this machine has "
                      f"{jax.device_count()} {jax.devices()[0].platform} devices; expected "
                      "smaller --meshes (on a CPU the script fakes as many as it needs).")
  config = _CONFIG.value
  print(f"{config.task}:{config.variant} on {jax.devices()[0].platform} "
        f"({jax.device_count()} devices), {_PER_DEVICE.value} examples per device; per device:")
  print(f"  {'mesh':>5} {'batch':>5} {'params':>8} {'frozen':>8} {'opt':>8} {'ema':>8} "
        f"{'temp':>8} {'args':>8}  compile  collectives")
  rows = []
  for data, fsdp in meshes:
    r = compile_mesh(config, data, fsdp, _PER_DEVICE.value)
    rows.append(r)
    size = lambda k: _size(r[k]) if k in r else "       -"
    print(f"  {r['mesh']:>5} {r['global_batch']:>5} {size('params_bytes')} {size('frozen_bytes')} "
          f"{size('opt_state_bytes')} {size('ema_bytes')} {size('temp_bytes')} "
          f"{size('arguments_bytes')} "
          f"{r['compile_s']:6.1f}s  "
          + ", ".join(f"{k} {v}" for k, v in r["collectives"].items()), flush=True)
  if _OUT.value:
    fileio.write_json(_OUT.value, {"config": f"{config.task}:{config.variant}",
                                   "platform": jax.devices()[0].platform,
                                   "per_device_batch": _PER_DEVICE.value, "meshes": rows})
  return 0


if __name__ == "__main__":
  cli.run(main)
