"""The training engine: born-sharded state, one jitted train step, the loop around it.

The same code runs on one CPU, on 8 fake CPU devices, on GPUs and on TPU slices; only the mesh in
the config changes. Data flows one way: task (model + data) -> Trainer (state, step) -> train().
The engine is handed its task (vlogger_jax/train/tasks.make_task builds one from a config); it
trains one stage, and vlogger_jax/train/stages.py chains stages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vlogger_jax import checkpoint as ckpt_lib
from vlogger_jax import fileio
from vlogger_jax import mesh as mesh_lib
from vlogger_jax import models
from vlogger_jax.models.params import merge, split_frozen
from vlogger_jax.train import metrics as metrics_lib
from vlogger_jax.train.prefetch import DeviceIterator, DevicePrefetcher
from vlogger_jax.train.state import TrainState, ema_decay_at, ema_update, make_optimizer


class TrainingDiverged(RuntimeError):
  """The loss or the gradients stopped being finite."""


def maybe_initialize_distributed(force: bool = False) -> None:
  """jax.distributed.initialize when launched as several processes (or when forced, on pods)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif force:
    jax.distributed.initialize()  # TPU pods and SLURM clusters describe themselves


class Trainer:
  """Builds the mesh, the sharded state and the jitted train step of a task from a config."""

  def __init__(self, config, task, devices=None):
    self.config = config
    self.mesh = mesh_lib.make_mesh(config.mesh, devices)
    self.rules = mesh_lib.rules_tuple(config.sharding_rules)
    self.task = task
    if hasattr(self.task, "prepare"):
      self.task.prepare()  # host work (datasets, statistics) before anything is traced
    self.tx, self.lr_schedule = make_optimizer(config.optimizer, config.num_train_steps)

    divisor = mesh_lib.batch_divisor(self.mesh, self.rules)
    if config.batch_size % divisor or config.batch_size % jax.process_count():
      raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {divisor} ways "
                       f"the batch is sharded and of the {jax.process_count()} processes.")
    self.local_batch = config.batch_size // jax.process_count()
    spec = self.task.batch_spec(config.batch_size)
    self.batch_shardings = {k: mesh_lib.batch_sharding(self.mesh, self.rules, axes)
                            for k, (_, axes) in spec.items()}
    self.abstract_batch = {k: s for k, (s, _) in spec.items()}
    self._build_shardings()
    self.train_step = jax.jit(self._train_step, in_shardings=(self.state_shardings,
                                                              self.batch_shardings),
                              out_shardings=(self.state_shardings, None), donate_argnums=0)

  # --- shapes and shardings, before any allocation ---

  def _init_params(self, rng):
    with nn.logical_axis_rules(self.rules):
      return self.task.init(rng)

  def _build_shardings(self):
    boxed = jax.eval_shape(self._init_params, jax.random.PRNGKey(0))
    param_sh = mesh_lib.logical_shardings(boxed, self.mesh, self.rules)
    train_sh, frozen_sh = split_frozen(param_sh, self.config.frozen)
    if not jax.tree.leaves(train_sh):
      raise ValueError(f"config.frozen {tuple(self.config.frozen)} freezes every parameter; "
                       "nothing would train.")
    abs_train, _ = split_frozen(nn.meta.unbox(boxed), self.config.frozen)
    repl = mesh_lib.replicated(self.mesh)
    abs_opt = jax.eval_shape(self.tx.init, abs_train)
    opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, abs_opt, train_sh,
                                   transform_non_params=lambda _: repl)
    self.state_shardings = TrainState(
        step=repl, params=train_sh, frozen=frozen_sh, opt_state=opt_sh,
        ema=train_sh if self.config.ema_decay else {}, rng=repl, bad_step=repl)
    abstract = jax.eval_shape(self._init_state, jax.random.PRNGKey(0))
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        self.state_shardings)

  def _state(self, train, frozen, step_rng) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=train, frozen=frozen,
                      opt_state=self.tx.init(train),
                      ema=jax.tree.map(jnp.copy, train) if self.config.ema_decay else {},
                      rng=step_rng, bad_step=jnp.full((), -1, jnp.int32))

  def _init_state(self, rng) -> TrainState:
    init_rng, step_rng = jax.random.split(rng)
    params = nn.meta.unbox(self._init_params(init_rng))
    return self._state(*split_frozen(params, self.config.frozen), step_rng)

  def init_state(self) -> TrainState:
    """A fresh state, each array created directly in its shards (born sharded)."""
    init = jax.jit(self._init_state, out_shardings=self.state_shardings)
    return init(jax.random.PRNGKey(self.config.seed))

  def random_state(self, seed: int = 0) -> TrainState:
    """A state shaped and sharded like init_state(), for benchmarks: every float parameter of
    rank >= 2 has mean 0 and variance 1/fan_in, every other one mean 1 and variance 0.1², all
    cut from one uniform random draw.

    The model's own initialisers are hundreds of separate random programs, which XLA compiles
    one by one (for the paper-size video model, 62 s of initialisation on a one-H200 host and
    99-172 s on a two-H200 host); the step costs the same on either state.
    """
    def make(rng):
      key, step_rng = jax.random.split(rng)
      abstract = (self.abstract_state.params, self.abstract_state.frozen)
      leaves, treedef = jax.tree.flatten(abstract)
      # Uniform with unit variance: a normal's erf_inv polynomial, which XLA fuses into every
      # leaf's slice, made this program as slow to compile as the initialisers.
      total = sum(math.prod(a.shape) for a in leaves)
      flat = jax.random.uniform(key, (total,), jnp.float32, -math.sqrt(3), math.sqrt(3))
      out, offset = [], 0
      for a in leaves:
        size = math.prod(a.shape)
        x = flat[offset:offset + size].reshape(a.shape)
        offset += size
        x = x / math.sqrt(size // a.shape[-1]) if a.ndim >= 2 else 1.0 + 0.1 * x
        out.append(x.astype(a.dtype))
      train, frozen = jax.tree.unflatten(treedef, out)
      return self._state(train, frozen, step_rng)

    return jax.jit(make, out_shardings=self.state_shardings)(jax.random.PRNGKey(seed))

  # --- the step ---

  def _train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      with nn.logical_axis_rules(self.rules):
        return self.task.loss(merge(params, state.frozen), batch, rng)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if self.config.ema_decay:
      decay = ema_decay_at(state.step, self.config.ema_decay, self.config.get("ema_warmup", True))
      ema = ema_update(state.ema, params, decay)
    else:
      ema = state.ema
    # A non-finite step changes nothing; the host sees bad_step at the next check and stops.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state), ema=keep(ema, state.ema),
        bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step))
    metrics = dict(metrics, grad_norm=grad_norm, lr=self.lr_schedule(state.step))
    return new_state, metrics

  def device_batch(self, local_batch: dict) -> dict:
    """Host-local numpy arrays -> global arrays sharded over the mesh (keys of batch_spec only)."""
    missing = [k for k in self.batch_shardings if k not in local_batch]
    if missing:
      raise ValueError(f"the data pipeline's batch lacks {', '.join(missing)}; the task's "
                       f"batch_spec expects {', '.join(self.batch_shardings)}.")
    return {k: jax.make_array_from_process_local_data(s, local_batch[k])
            for k, s in self.batch_shardings.items()}

  def eval_params(self, state: TrainState):
    """The parameters to evaluate and sample with: the EMA when there is one."""
    return merge(state.ema if self.config.ema_decay else state.params, state.frozen)


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  steps_per_sec: float      # steady state: the log intervals after the first
  stopped_early: bool


class _StopFlag:
  """Set by SIGTERM/SIGINT; the loop saves a checkpoint and leaves at the next step boundary."""

  def __init__(self):
    self.raised = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.raised and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C leaves at once
    self.raised = True

  def __exit__(self, *exc):
    for sig, prev in self._previous.items():
      signal.signal(sig, prev)


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


# Settings a resume keeps: they fix the model, the data and its order, and the random streams the
# checkpoint was trained with, so changing them would not continue the same run. A dotted key in
# config.allow_changes (comma-separated) lets one change anyway; every other change (the
# learning rate, num_train_steps, the mesh, logging...) is allowed and reported.
FIXED_ON_RESUME = ("task", "seed", "batch_size", "data", "model", "frozen", "diffusion")
# Where the data lives, not what it is.
MOVABLE_ON_RESUME = ("data.data_dir",)


class ResumeError(ValueError):
  """A resume refused because settings that fix the run changed (one sentence)."""


def _flat_config(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flat_config(v, key + "."))
    else:
      out[key] = v
  return out


def _covered(key: str, prefixes) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
  """(dotted key, saved value, current value) of every setting that differs, after a JSON round
  trip (tuples and lists alike); a key only one side has shows None on the other."""
  a = _flat_config(json.loads(json.dumps(saved)))
  b = _flat_config(json.loads(json.dumps(current)))
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if k != "allow_changes" and a.get(k) != b.get(k)]


def _allowed(config) -> tuple[str, ...]:
  value = config.get("allow_changes", "") or ""
  items = value.split(",") if isinstance(value, str) else list(value)
  return tuple(i.strip() for i in items if i.strip())


def describe_changes(changes) -> str:
  """'key old -> new, ...' of config_changes' list."""
  show = lambda v: "(unset)" if v is None else json.dumps(v)
  return ", ".join(f"{k} {show(old)} -> {show(new)}" for k, old, new in changes)


def check_resume(config, saved: dict, step: int, directory: str) -> list:
  """The changes of `config` against the config saved with checkpoint `step`; ResumeError
  (one sentence) if one of them is a FIXED_ON_RESUME setting that allow_changes does not name.
  A key the saved config lacks (a setting newer than the checkpoint) is reported, not refused."""
  changes = config_changes(saved, config.to_dict())
  refused = [c for c in changes
             if c[1] is not None and c[2] is not None and _covered(c[0], FIXED_ON_RESUME)
             and not _covered(c[0], MOVABLE_ON_RESUME) and not _covered(c[0], _allowed(config))]
  if refused:
    keys = ",".join(k for k, _, _ in refused)
    raise ResumeError(
        f"resuming checkpoint step {step} in {directory} with {describe_changes(refused)} is "
        "refused, because these settings fix the model, the data order or the random streams "
        f"it was trained with; use a new --workdir, or pass --config.allow_changes={keys} to "
        "resume with them anyway.")
  return changes


def _start(config, workdir: str, task, devices):
  """(trainer, host data iterator, start step or None, state, whether the checkpoint was verified
  by its manifest): a new run, or the newest good
  checkpoint's state and data order (damaged steps moved aside, changed settings checked and
  reported). Nothing in the workdir is written here: a start that fails (another architecture,
  a refused change) leaves it as it was, but for a damaged step moved aside."""
  trainer = Trainer(config, task, devices)
  data = task.data_iterator(jax.process_index(), jax.process_count(), trainer.local_batch)
  reader = ckpt_lib.CheckpointReader(workdir)
  changes = []

  def check(step, saved):
    changes[:] = check_resume(config, saved, step, reader.directory)

  restored = reader.restore_latest(trainer.abstract_state, report=_log, check=check)
  if restored is None:
    state = trainer.init_state()
    _log(f"{config.task}: new run in {workdir} on a {dict(trainer.mesh.shape)} mesh "
         f"({jax.device_count()} {jax.devices()[0].platform} devices)")
    return trainer, data, None, state, True
  start, state, data_state, verified = restored
  if start >= config.num_train_steps:
    return trainer, data, start, state, verified
  if data_state is not None:
    data.set_state(data_state)
  _log(f"{config.task}: resumed from step {start} in {reader.directory}")
  if changes:
    _log(f"changed since step {start}: {describe_changes(changes)}.")
  return trainer, data, start, state, verified


def _non_finite(history: list, step: int, bad: int) -> str:
  """What was not finite in the update from `bad` to `bad + 1`, read from the metrics of the
  updates up to `step` still in `history`."""
  index = len(history) - (step - bad)
  if not 0 <= index < len(history):
    return "loss or gradient norm"
  m = jax.device_get(history[index])
  loss, norm = float(m["loss"]), float(m["grad_norm"])
  if not math.isfinite(loss):
    return f"loss ({loss})" + ("" if math.isfinite(norm) else f" and gradient norm ({norm})")
  return f"gradient norm ({norm}, with a finite loss of {loss:.4g})"


def train(config, workdir: str, task, devices=None) -> TrainResult:
  """Trains `task` (built from `config`) in `workdir`, resuming from its newest good checkpoint;
  returns the final state."""
  config = models.resolve(config)   # the saved config spells out the network
  config_dict = config.to_dict()
  total = config.num_train_steps
  trainer, host_data, start, state, verified = _start(config, workdir, task, devices)
  if start is not None and start >= total:
    getattr(host_data, "close", lambda: None)()
    _log(f"{config.task}: the run in {workdir} is already finished at step {start} of {total}; "
         "nothing to train (raise --config.num_train_steps to train further).")
    return TrainResult(state, 0.0, False)
  os.makedirs(workdir, exist_ok=True)
  checkpointer = ckpt_lib.Checkpointer(workdir, config.checkpoint.keep,
                                       config.checkpoint.async_save)
  # Written only now: a start that failed left the workdir's config.json as it was.
  if jax.process_index() == 0:
    fileio.write_json(os.path.join(workdir, "config.json"), config_dict)
  step = int(state.step)
  writer = metrics_lib.MetricWriter(workdir, resume_step=step)
  data = (DevicePrefetcher(host_data, trainer.device_batch, size=config.prefetch)
          if config.prefetch else DeviceIterator(host_data, trainer.device_batch))
  history = []

  def check_finite(step: int):
    bad = int(state.bad_step)
    if bad >= 0:
      checkpointer.wait()
      good = checkpointer.latest_step()
      where = (f"the last good checkpoint is step {good} in {checkpointer.directory}, which a "
               "rerun resumes from" if good is not None
               else "no checkpoint was written before it")
      what = _non_finite(history, step, bad)
      if bad == start and not verified:
        raise TrainingDiverged(
            f"training stopped at step {step}: the first update after restoring checkpoint step "
            f"{start}, which has no checksum manifest, had a non-finite {what}, so that "
            f"checkpoint is probably damaged; move {checkpointer.directory}/{start} aside and "
            "rerun to resume from the step before it.")
      raise TrainingDiverged(
          f"training stopped at step {step}: the update from step {bad} to {bad + 1} had a "
          f"non-finite {what}, so the state stayed at step {bad}; {where}; look at the data "
          f"near step {bad}, or lower optimizer.lr if the loss was rising before it.")

  def save(step: int):
    check_finite(step)
    checkpointer.save(step, state, config_dict, data.get_state(), force=True)

  def announce_stop(step: int):
    checkpointer.wait()
    _log(f"stop requested: saved step {step} in {checkpointer.directory}; rerun the same command "
         "to resume.")

  progress = metrics_lib.Progress(total, step)
  rates, stopped, waited = [], False, 0.0

  def shut_down():
    data.close()
    checkpointer.close()
    writer.close()

  try:
    with _StopFlag() as stop:
      while step < total:
        try:
          t_wait = time.perf_counter()
          batch = next(data)
          waited += time.perf_counter() - t_wait
        except Exception:  # pylint: disable=broad-except
          # A SIGTERM sent to the whole process group (`timeout`, a preempted container) also
          # ends the data worker processes, and the next batch then fails: still save the last
          # step, whose data state is that of the batch before.
          if not (stop.raised and jax.process_count() == 1):
            raise
          if checkpointer.latest_step() != step:
            save(step)
          announce_stop(step)
          stopped = True
          break
        state, metrics = trainer.train_step(state, batch)
        step += 1
        history.append(metrics)
        checkpointer.poll()   # a failed asynchronous save stops the run here (SaveError)
        if step % config.log_every == 0 or step == total:
          check_finite(step)
          summary = metrics_lib.mean_metrics(history)
          history = []
          rate = progress.report(step, summary, input_wait_s=waited)
          waited = 0.0
          rates.append(rate)
          writer.write(step, dict(summary, steps_per_sec=rate, input_share=progress.input_share))
        if config.eval_every and (step % config.eval_every == 0 or step == total):
          writer.write(step, task.evaluate(trainer.eval_params(state), jax.random.PRNGKey(step)))
        preempted = (stop.raised if jax.process_count() == 1
                     else checkpointer.reached_preemption(step))
        if step % config.checkpoint.every == 0 or step == total or preempted:
          save(step)
        if preempted and step < total:
          announce_stop(step)
          stopped = True
          break
      if not stopped:
        checkpointer.wait()
        _log(f"{config.task}: finished at step {step} of {total}; saved step {step} in "
             f"{checkpointer.directory}.")
  except BaseException:
    try:
      shut_down()
    except Exception:  # pylint: disable=broad-except
      pass   # the error in flight is the one to report
    raise
  shut_down()
  steady = rates[1:] or rates
  return TrainResult(state, sum(steady) / len(steady) if steady else 0.0, stopped)
