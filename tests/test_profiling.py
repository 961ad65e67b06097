"""Profiler summaries (vlogger_jax/profiling.py) and launch/benchmark.py, which reports them."""

import gzip
import json

import jax
import jax.numpy as jnp
import pytest
from conftest import run_python

from vlogger_jax import profiling


def test_categories_from_kernel_names():
  assert profiling.category("sm90_xmma_gemm_bf16bf16_bf16f32") == "matrix"
  assert profiling.category("cudnn_conv_fprop") == "matrix"
  assert profiling.category("flash_fprop_kernel") == "attention"
  assert profiling.category("loop_convert_fusion.12") == "fusion"  # 'convert' is not a conv
  assert profiling.category("input_reduce_fusion") == "reduce"
  assert profiling.category("MemcpyD2D") == "copy"
  assert profiling.category("mystery") == "other"


def test_summarize_sums_device_kernels_per_step(tmp_path):
  # A hand-made trace: device kernels count, host events and other processes do not.
  events = [
      {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
      {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
      {"ph": "X", "pid": 1, "tid": 1, "name": "PjitFunction(step)", "dur": 9000.0},
      {"ph": "X", "pid": 2, "tid": 7, "name": "sm90_xmma_gemm", "dur": 3000.0},
      {"ph": "X", "pid": 2, "tid": 7, "name": "sm90_xmma_gemm", "dur": 3000.0},
      {"ph": "X", "pid": 2, "tid": 7, "name": "loop_add_fusion", "dur": 1000.0},
      {"ph": "X", "pid": 2, "tid": 7, "name": "flash_fprop", "dur": 1000.0},
  ]
  path = tmp_path / "perfetto_trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  s = profiling.summarize(str(path), steps=2)
  assert s["source"] == "/device:GPU:0" and s["kernels"] == 3
  assert s["busy_ms_per_step"] == pytest.approx(4.0)
  assert s["top"][0] == {"name": "sm90_xmma_gemm", "category": "matrix", "ms_per_step": 3.0,
                         "calls_per_step": 1.0, "share": 0.75}
  assert s["categories"]["attention"]["share"] == pytest.approx(0.125)
  assert "top kernels" in profiling.format_summary(s)


def test_trace_of_a_real_function_on_cpu(tmp_path):
  f = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
  a = jnp.ones((256, 256))
  f(a).block_until_ready()
  path = profiling.trace(lambda: f(a), steps=2, log_dir=str(tmp_path))
  s = profiling.summarize(path, steps=2)
  assert s["kernels"] >= 1 and s["busy_ms_per_step"] > 0
  assert sum(v["share"] for v in s["categories"].values()) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="at least 1"):
    profiling.trace(lambda: f(a), steps=0, log_dir=str(tmp_path))


def test_benchmark_reports_step_figures_and_a_profile(tmp_path):
  out = tmp_path / "bench.json"
  proc = run_python(["launch/benchmark.py", "--config=configs/toy.py:tiny", "--steps=3",
                     "--warmup=1", "--peak_tflops=0.1", "--profile_steps=2",
                     f"--profile_dir={tmp_path / 'prof'}", f"--out={out}"])
  assert "device time per step" in proc.stdout and "mfu" in proc.stdout
  with open(out) as f:
    figures = json.load(f)
  assert figures["step_s_median"] > 0 and figures["model_tflop_per_step"] > 0
  assert 0 < figures["mfu"] and figures["peak_source"] == "given by --peak_tflops"
  assert figures["profile"]["steps"] == 2 and figures["profile"]["kernels"] >= 1
  assert figures["profile"]["trace"].startswith(str(tmp_path / "prof"))


def test_benchmark_of_a_motion_config_opens_no_dataset(tmp_path):
  # On fake data the motion task gets identity statistics: a fresh machine must not build the
  # synthetic set first (the paper config would build `large`).
  data_dir = tmp_path / "data"
  proc = run_python(["launch/benchmark.py", "--config=configs/motion.py:tiny", "--steps=1",
                     "--warmup=0", "--peak_tflops=1", f"--config.data.data_dir={data_dir}"])
  assert "step_s_median" in proc.stdout and "motion:tiny" in proc.stdout
  assert not data_dir.exists()
