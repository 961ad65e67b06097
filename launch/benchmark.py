r"""Measures a config's training step: compile time, step time, model FLOPs and utilisation, memory.

  python launch/benchmark.py --config=configs/toy.py --loop_steps=2000 --out=bench/toy.json
  python launch/benchmark.py --config=configs/base128.py --config.pretrained=none \
      --config.batch_size=16 --steps=3 --profile_steps=2    # + device time per kernel

Model FLOPs are analytic (vlogger_jax/flops.py: matrix products and convolutions of the step's
forward and backward, frozen parts only as far as gradients must flow). Utilisation divides them
by the peak this device measures on a large bf16 matrix product (f32 on CPU), unless
--peak_tflops is given. Attention is counted on XLA's path (cuDNN's fused kernel hides its
products from the jaxpr). The timed steps run on `Trainer.random_state` (--init=random, quick to
compile) and on the task's `example_batch` where it has one: the video task renders its controls
in the step, and their cost depends on the motion parameters. --loop_steps also runs the real
training loop (data, metrics, progress) and reports its per-step cost beyond the bare jitted step:
the engine's overhead.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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
                          "as in training; a minute or more to compile at paper size).")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON to this path.")
flags.mark_flags_as_required(["config"])


def measure_peak_tflops() -> tuple[float, str]:
  """Dense matmul rate of device 0: bf16 8192^3 on accelerators, f32 2048^3 on CPU."""
  import time

  import jax
  import jax.numpy as jnp
  cpu = jax.devices()[0].platform == "cpu"
  n, dtype = (2048, jnp.float32) if cpu else (8192, jnp.bfloat16)
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  mm = jax.jit(lambda a, b: a @ b)
  for _ in range(3):
    mm(a, b).block_until_ready()
  reps = 3 if cpu else 20
  t = time.perf_counter()
  for _ in range(reps):
    out = mm(a, b)
  out.block_until_ready()
  rate = 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12
  return rate, f"measured {n}^3 {jnp.dtype(dtype).name} matmul"


def fake_batch(trainer, seed: int = 0) -> dict:
  """Host-local arrays shaped like the task's batch: the task's `example_batch` where it has one
  (tasks whose step cost depends on the values), else uniform in [0, 1] and ints in [0, 255]."""
  import numpy as np
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


def run(config, steps, warmup, loop_steps, peak_tflops, data="fake", profile_steps=0,
        profile_dir=None, init="random"):
  import tempfile
  import time

  import jax
  import numpy as np

  from vlogger_jax.flops import count_flops
  from vlogger_jax.train import config_lib, loop
  from vlogger_jax.train.state import merge
  from vlogger_jax.train.tasks import get_task

  t0 = time.perf_counter()
  progress = lambda what: print(f"[{time.perf_counter() - t0:7.1f} s] {what}", flush=True)
  trainer = loop.Trainer(config)
  progress("trainer built")
  if data == "real":
    it = trainer.task.data_iterator(jax.process_index(), jax.process_count(), trainer.local_batch)
    batch = trainer.device_batch(next(it))
  else:
    batch = trainer.device_batch(fake_batch(trainer))
  state = trainer.random_state(config.seed) if init == "random" else trainer.init_state()
  jax.block_until_ready(state)
  progress(f"state initialised ({init})")

  t = time.perf_counter()
  compiled = trainer.train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  progress("train step compiled")

  # Counted on XLA's attention (the same products): cuDNN's fused kernel is one opaque call in
  # the jaxpr, and tracing it needs a GPU. The counting task only traces shapes, so it loads no
  # pretrained weights.
  counting_task = trainer.task
  if "attention_impl" in config.get("model", {}) and config.model.attention_impl != "xla":
    counting = {"model.attention_impl": "xla"}
    if "pretrained" in config:
      counting["pretrained"] = "none"
    counting_task = get_task(config.task)(config_lib.overridden(config, **counting))

  def train_grads(params, frozen, batch):
    return jax.value_and_grad(lambda p: counting_task.loss(merge(p, frozen), batch,
                                                           jax.random.PRNGKey(0)),
                              has_aux=True)(params)

  abstract = trainer.abstract_state
  flops = count_flops(train_grads, abstract.params, abstract.frozen, trainer.abstract_batch)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0

  for _ in range(warmup):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  progress(f"{warmup} warm-up steps")
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  t = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  pipelined = (time.perf_counter() - t) / steps
  step_s = float(np.median(times))

  if peak_tflops:
    peak, peak_source = peak_tflops, "given by --peak_tflops"
  else:
    peak, peak_source = measure_peak_tflops()
  stats = jax.devices()[0].memory_stats() or {}
  mem = compiled.memory_analysis()
  figures = {
      "config": f"{config.task}:{config.variant}",
      "data": data,
      "init": init,
      "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "global_batch": config.batch_size,
      "compile_s": compile_s,
      "step_s_median": step_s,
      "step_s_pipelined": pipelined,
      "examples_per_s": config.batch_size / pipelined,
      "model_tflop_per_step": flops / 1e12,
      "xla_cost_analysis_tflop_per_step": xla_flops / 1e12,
      "achieved_tflops": flops / pipelined / 1e12 / jax.device_count(),
      "peak_tflops_per_device": peak,
      "peak_source": peak_source,
      "mfu": flops / pipelined / 1e12 / jax.device_count() / peak,
      "peak_memory_gib": (stats.get("peak_bytes_in_use", 0) / 2**30 if stats else
                          (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2**30),
  }
  if profile_steps:
    from vlogger_jax import profiling
    box = {"state": state}

    def one_step():
      box["state"], out = compiled(box["state"], batch)
      return out

    path = profiling.trace(one_step, profile_steps,
                           profile_dir or tempfile.mkdtemp(prefix="vlogger_profile_"))
    summary = profiling.summarize(path, profile_steps)
    print(profiling.format_summary(summary), flush=True)
    figures["profile"] = summary
  if loop_steps:
    with tempfile.TemporaryDirectory() as workdir:
      log_every = max(loop_steps // 5, 1)
      cfg = config_lib.overridden(config, num_train_steps=loop_steps, log_every=log_every,
                                  eval_every=0, **{"checkpoint.every": 10 * loop_steps,
                                                   "checkpoint.async_save": True})
      result = loop.train(cfg, workdir)
    loop_step = 1.0 / result.steps_per_sec
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
    from vlogger_jax import fileio
    fileio.write_json(_OUT.value, {"command": " ".join(sys.argv), **figures})


if __name__ == "__main__":
  from vlogger_jax.train.config_lib import preflight
  if (problem := preflight(sys.argv)):
    sys.exit(f"error: {problem}")
  app.run(main)
