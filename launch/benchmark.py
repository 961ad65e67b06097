r"""Measures a config's training step: compile time, step time, model FLOPs and utilisation, memory.

  python launch/benchmark.py --config=configs/toy.py:tiny --steps=3 --warmup=1
  python launch/benchmark.py --config=configs/toy.py --loop_steps=2000 --out=bench/toy.json
  python launch/benchmark.py --config=configs/base128.py --config.batch_size=16 --steps=3 \
      --profile_steps=2    # + device time per kernel

Builds the config's task (make_task) and its Trainer. With the default --data=fake no dataset is
opened: the timed steps run on the task's `example_batch` where it has one (the image and video
tasks: synthetic motion parameters, because the video step renders its controls and their cost
depends on them), else on a made-up batch, and a motion task gets identity statistics. A video
config never loads a pre-trained image model (config.pretrained is taken as 'none'). The state is
`Trainer.random_state` (--init=random, quick to compile). Model FLOPs are analytic
(vlogger_jax/flops.py: matrix products and convolutions of the step's forward and backward, frozen
parts only as far as gradients must flow), attention counted on XLA's path (cuDNN's fused kernel
hides its products from the jaxpr). Utilisation divides them by the peak this device measures on a
large bf16 matrix product (f32 on CPU), unless --peak_tflops is given. The step time is the median
of --steps calls each blocked on, and the pipelined time that of --steps calls dispatched back to
back (vlogger_jax/timing.py). --loop_steps also runs the real training loop (data, metrics,
progress) and reports its per-step cost beyond the bare jitted step: the engine's overhead. Measured
figures: BENCHMARKS.md.
"""

import sys
import tempfile
import time

from absl import flags, logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from vlogger_jax import cli
from vlogger_jax import fileio
from vlogger_jax import models
from vlogger_jax import motion as motion_lib
from vlogger_jax import profiling
from vlogger_jax import timing
from vlogger_jax.flops import count_flops
from vlogger_jax.models.params import merge
from vlogger_jax.train import config_lib, loop
from vlogger_jax.train.tasks import make_task

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/toy.py.",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compilation.")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 0, "Steps of the real training loop (0: skip).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Device peak in TFLOP/s; 0 measures it.")
_DATA = flags.DEFINE_enum("data", "fake", ["fake", "real"],
                          "Timed steps on a made-up batch of the task's batch_spec (no dataset "
                          "needed; see fake_batch) or on the task's first real batch.")
_PROFILE = flags.DEFINE_integer("profile_steps", 0, "Also trace this many steps with the JAX "
                                "profiler and print the device time per kernel and category "
                                "(vlogger_jax/profiling.py); 0: no trace.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None, "Where the trace goes (default: a "
                                   "temporary folder, printed).")
_INIT = flags.DEFINE_enum("init", "random", ["random", "model"],
                          "State of the timed steps: 'random' (Trainer.random_state: one random "
                          "draw, compiles in seconds) or 'model' (the model's own initialisers, "
                          "as in training; much slower to compile at paper size, BENCHMARKS.md).")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON to this path.")
flags.mark_flags_as_required(["config"])


def measure_peak_tflops() -> tuple[float, str]:
  """Dense matmul rate of device 0: bf16 8192^3 on accelerators, f32 2048^3 on CPU."""
  cpu = jax.devices()[0].platform == "cpu"
  n, dtype = (2048, jnp.float32) if cpu else (8192, jnp.bfloat16)
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  mm = jax.jit(lambda a, b: a @ b)
  timing.time_calls(mm, a, b, repeats=1, warmup=2)
  seconds = timing.pipelined_seconds(mm, a, b, calls=3 if cpu else 20)
  return 2 * n ** 3 / seconds / 1e12, f"measured {n}^3 {jnp.dtype(dtype).name} matmul"


def benchmark_config(config) -> ml_collections.ConfigDict:
  """`config` as benchmarked: a video config never loads a pre-trained image model (the step
  costs the same on any weights, and 'none' needs no image run)."""
  if models.kind(config) == "video":
    return config_lib.overridden(config, pretrained="none")
  return config


def make_benchmark_task(config, data: str = "fake"):
  """The task of `config`; on fake data a motion task gets identity statistics, so that no
  dataset is opened or built (its step does not depend on the statistics)."""
  task = make_task(config)
  if data == "fake" and models.kind(config) == "motion":
    task.stats = motion_lib.Stats.identity()
  return task


def fake_batch(trainer, seed: int = 0) -> dict:
  """Host-local arrays shaped like the task's batch: the task's `example_batch` where it has one
  (tasks whose step cost depends on the values), else uniform in [0, 1] and ints in [0, 255]."""
  if hasattr(trainer.task, "example_batch"):
    return trainer.task.example_batch(trainer.local_batch, seed)
  rng = np.random.default_rng(seed)
  out = {}
  for k, spec in trainer.abstract_batch.items():
    shape = (trainer.local_batch,) + tuple(spec.shape[1:])
    if np.issubdtype(spec.dtype, np.integer):
      out[k] = rng.integers(0, 256, size=shape).astype(spec.dtype)
    else:
      out[k] = rng.uniform(size=shape).astype(spec.dtype)
  return out


def model_flops(config, trainer) -> float:
  """Analytic FLOPs of one train step (forward and backward), counted on XLA's attention: cuDNN's
  fused kernel is one opaque call in the jaxpr, and tracing it needs a GPU. The counting task
  only traces shapes."""
  counting_task = trainer.task
  if "attention_impl" in config.get("model", {}) and config.model.attention_impl != "xla":
    counting_task = make_task(config_lib.overridden(config, **{"model.attention_impl": "xla"}))

  def train_grads(params, frozen, batch):
    return jax.value_and_grad(lambda p: counting_task.loss(merge(p, frozen), batch,
                                                           jax.random.PRNGKey(0)),
                              has_aux=True)(params)

  abstract = trainer.abstract_state
  return count_flops(train_grads, abstract.params, abstract.frozen, trainer.abstract_batch)


def loop_step_seconds(config, loop_steps: int) -> float:
  """Seconds per step of the real training loop (data, metrics, progress) over `loop_steps`
  steps in a temporary workdir, in its steady state."""
  with tempfile.TemporaryDirectory() as workdir:
    cfg = config_lib.overridden(config, num_train_steps=loop_steps,
                                log_every=max(loop_steps // 5, 1), eval_every=0,
                                **{"checkpoint.every": 10 * loop_steps,
                                   "checkpoint.async_save": True})
    result = loop.train(cfg, workdir, make_task(cfg))
  return 1.0 / result.steps_per_sec


def run(config, steps, warmup, loop_steps, peak_tflops, data="fake", profile_steps=0,
        profile_dir=None, init="random"):
  """The figures of the module doc, as a dict (printed by main and written by --out)."""
  t0 = time.perf_counter()
  progress = lambda what: print(f"[{time.perf_counter() - t0:7.1f} s] {what}", flush=True)
  config = benchmark_config(config)
  trainer = loop.Trainer(config, make_benchmark_task(config, data))
  progress("trainer built")
  if data == "real":
    it = trainer.task.data_iterator(jax.process_index(), jax.process_count(), trainer.local_batch)
    batch = trainer.device_batch(next(it))
  else:
    batch = trainer.device_batch(fake_batch(trainer))
  state = trainer.random_state(config.seed) if init == "random" else trainer.init_state()
  jax.block_until_ready(state)
  progress(f"state initialised ({init})")
  compiled, compile_s = timing.compile_timed(trainer.train_step, state, batch)
  progress("train step compiled")
  flops = model_flops(config, trainer)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0

  # The step donates its state: each call takes the state the previous one returned.
  box = {"state": state}

  def one_step():
    box["state"], metrics = compiled(box["state"], batch)
    return box["state"], metrics

  _, times = timing.time_calls(one_step, repeats=steps, warmup=warmup)
  progress(f"{warmup} warm-up and {steps} timed steps")
  pipelined = timing.pipelined_seconds(one_step, calls=steps)
  if peak_tflops:
    peak, peak_source = peak_tflops, "given by --peak_tflops"
  else:
    peak, peak_source = measure_peak_tflops()
  stats = jax.devices()[0].memory_stats() or {}
  mem = compiled.memory_analysis()
  achieved = flops / pipelined / 1e12 / jax.device_count()
  figures = {
      "config": f"{config.task}:{config.variant}",
      "data": data,
      "init": init,
      "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "global_batch": config.batch_size,
      "compile_s": compile_s,
      "step_s_median": timing.median(times),
      "step_s_pipelined": pipelined,
      "examples_per_s": config.batch_size / pipelined,
      "model_tflop_per_step": flops / 1e12,
      "xla_cost_analysis_tflop_per_step": xla_flops / 1e12,
      "achieved_tflops": achieved,
      "peak_tflops_per_device": peak,
      "peak_source": peak_source,
      "mfu": achieved / peak,
      "peak_memory_gib": (stats.get("peak_bytes_in_use", 0) / 2**30 if stats else
                          (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2**30),
  }
  if profile_steps:
    path = profiling.trace(one_step, profile_steps,
                           profile_dir or tempfile.mkdtemp(prefix="vlogger_profile_"))
    summary = profiling.summarize(path, profile_steps)
    print(profiling.format_summary(summary), flush=True)
    figures["profile"] = summary
  if loop_steps:
    loop_step = loop_step_seconds(config, loop_steps)
    figures.update(loop_step_s=loop_step, engine_overhead_ms=(loop_step - pipelined) * 1e3)
  return figures


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  figures = run(_CONFIG.value, _STEPS.value, _WARMUP.value, _LOOP_STEPS.value, _PEAK.value,
                _DATA.value, _PROFILE.value, _PROFILE_DIR.value, _INIT.value)
  shown_figures = {k: v for k, v in figures.items() if k != "profile"}
  width = max(len(k) for k in shown_figures)
  for k, v in shown_figures.items():
    shown = f"{v:.4g}" if isinstance(v, float) else str(v)
    print(f"{k:<{width}}  {shown}")
  if _OUT.value:
    fileio.write_json(_OUT.value, {"command": " ".join(sys.argv), **figures})


if __name__ == "__main__":
  if (problem := config_lib.preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  cli.run(main)
