"""Exported samplers (vlogger_jax/inference/exported.py): the artifacts of the tiny random-weight
stages reload in a fresh process that imports no model code, match the in-process functions,
run at two batch sizes, and a whole generation from them is the Python pipeline's.

One export is shared by the module; the fresh process runs beside the in-process pipeline (the
two compilations of the video network, about 40 s each on a 2-core CPU, overlap)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, random_params
from vlogger_jax import contracts
from vlogger_jax import models
from vlogger_jax.inference import exported
from vlogger_jax.inference import pipeline
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.models import video as video_lib
from vlogger_jax.models import weights
from vlogger_jax.train import config_lib

OPTIONS = pipeline.Options(num_samples=2, seed=3, motion_sampler="ddim", motion_steps=1,
                           video_sampler="ddim", video_steps=1, sr_sampler="ddim", sr_steps=1,
                           windows_per_chunk=1)
FRAMES = 60            # 2.5 s: two motion windows (48, overlap 24), 14 video windows (8, overlap 4)

# Run in the fresh process: loads the artifacts, generates, calls the motion artifact at batch
# sizes 1 and 2 and the controls artifact, and reports which model modules were imported.
CHILD = r"""
import sys
import numpy as np
import jax.numpy as jnp
from vlogger_jax.inference import exported
folder, ref_path, inputs_path, out_path = sys.argv[1:]
gen = exported.load(folder)
ref = dict(np.load(ref_path))
inputs = dict(np.load(inputs_path))
result = gen.generate(ref, wave=inputs["wave"], seed=3, num_samples=2)
motion_1 = np.asarray(gen.motion(inputs["mel"][:1], inputs["keys"][:1], inputs["context"][:1],
                                 jnp.int32(1)))
motion_2 = np.asarray(gen.motion(inputs["mel"], inputs["keys"], inputs["context"], jnp.int32(1)))
clip = gen.clip(ref, {k: result["params"][k] for k in ("expression", "head_pose",
                                                       "body_keypoints")})
controls = gen.controls(clip)
loaded = [m for m in sys.modules
          if m == "flax" or m.startswith(("flax.", "vlogger_jax.models", "vlogger_jax.nn"))]
np.savez(out_path, frames=result["frames"], motion=result["motion"], motion_1=motion_1,
         motion_2=motion_2, controls=controls, loaded=np.array(loaded, dtype=str).reshape(-1))
"""


@pytest.fixture(scope="module")
def stages(tiny_weights, tmp_path_factory):
  """A Pipeline of the tiny motion, 32² video and 32² -> 64² super-resolution stages."""
  config = config_lib.overridden(config_lib.load_config_file(
      os.path.join(REPO, "configs/sr256.py:tiny")), **{"sr.low_resolution": 32})
  config = models.resolve(config)
  sr = weights.save(str(tmp_path_factory.mktemp("sr") / "sr64.npz"), config,
                    random_params(models.build(config), seed=1), 0, dtype="float32")
  return pipeline.Pipeline.load(tiny_weights["motion"], tiny_weights["video"], (sr,))


@pytest.fixture(scope="module")
def run(stages, tiny_reference, tmp_path_factory):
  """(folder, manifest, inputs, the child's outputs, the pipeline's result): one export, the
  fresh process started on it, and the pipeline run in this process meanwhile."""
  folder = str(tmp_path_factory.mktemp("exported"))
  manifest = exported.export(stages, OPTIONS, folder, platforms=("cpu",), log=lambda _: None)
  wave = np.random.default_rng(0).normal(0.0, 0.1, FRAMES * 16000 // 24).astype(np.float32)
  cfg = stages.motion_config(OPTIONS)
  chunk = cfg.window                                  # one window per chunk
  rng = np.random.default_rng(1)
  inputs = {"wave": wave, "mel": rng.normal(size=(2, chunk, 256)).astype(np.float32),
            "keys": np.asarray(jax.random.split(jax.random.PRNGKey(7), 2)),
            "context": rng.normal(size=(2, cfg.overlap, 223)).astype(np.float32)}
  tmp = tmp_path_factory.mktemp("child")
  np.savez(tmp / "inputs.npz", **inputs)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  child = subprocess.Popen([sys.executable, "-c", CHILD, folder, tiny_reference,
                            str(tmp / "inputs.npz"), str(tmp / "out.npz")], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ref = reference_lib.load(tiny_reference)
  result = stages.generate(ref, wave, OPTIONS)
  _, err = child.communicate(timeout=600)
  assert child.returncode == 0, err[-6000:]
  return folder, manifest, inputs, dict(np.load(tmp / "out.npz")), result


def test_the_manifest_describes_each_artifact(run):
  folder, manifest, _, _, _ = run
  assert manifest == json.load(open(os.path.join(folder, exported.MANIFEST)))
  assert set(manifest["artifacts"]) == {"motion_w1", "controls_w8", "video_w1", "sr64_w1"}
  video = manifest["artifacts"]["video_w1"]
  assert video["platforms"] == ["cpu"] and video["params"] == "params_video.npz"
  assert video["outputs"] == [{"shape": ["b", "8", "32", "32", "3"], "dtype": "float32"}]
  assert video["inputs"][0] == {"name": "ref_image", "shape": ["b", "32", "32", "3"],
                                "dtype": "float32"}
  assert video["inputs"][-1] == {"name": "first_window", "shape": [], "dtype": "int32"}
  assert video["settings"]["sampler"] == "ddim" and video["settings"]["steps"] == 1
  assert manifest["artifacts"]["sr64_w1"]["settings"]["low_size"] == 32
  assert manifest["versions"]["jax"] == jax.__version__
  for entry in manifest["artifacts"].values():
    assert os.path.isfile(os.path.join(folder, entry["file"]))


def test_the_fresh_process_imports_no_model_code(run):
  assert list(run[3]["loaded"]) == []


def test_the_motion_artifact_matches_the_model_at_two_batch_sizes(run, stages):
  _, _, inputs, child, _ = run
  cfg = stages.motion_config(OPTIONS)
  model, params = stages.motion.model, stages.motion.params
  want = np.asarray(model.jitted_generate(params, inputs["mel"], inputs["keys"], cfg,
                                          jnp.asarray(inputs["context"]), jnp.int32(1)))
  np.testing.assert_allclose(child["motion_2"], want, atol=1e-5)
  np.testing.assert_allclose(child["motion_1"], want[:1], atol=1e-5)


def test_the_controls_artifact_matches_the_renderer(run, stages):
  _, _, _, child, result = run
  clip = result.params
  want = jax.jit(lambda s, f, *fr: video_lib.example_controls(
      stages.head_model, s, f, list(fr), 32))(
          clip["shape"], clip["fov"], *(clip[k][:, :8] for k in contracts.FRAME_KEYS))
  np.testing.assert_allclose(child["controls"][:, :8], np.asarray(want), atol=1e-5)
  assert child["controls"].shape == (2, FRAMES, 32, 32, 22)


def test_the_exported_generation_is_the_pipelines(run):
  _, _, _, child, result = run
  # Bit-equal on the CPU (measured): the artifacts are the programs the pipeline jits, lowered
  # through jax.export, and the chunks, keys and padding are the pipeline's.
  np.testing.assert_array_equal(child["motion"], result.motion)
  assert child["frames"].shape == result.frames.shape == (2, FRAMES, 64, 64, 3)
  np.testing.assert_array_equal(child["frames"], result.frames)


def test_an_unknown_platform_is_refused_before_anything_is_written(tmp_path):
  # jax would lower for 'gpu', and the artifact would then refuse to run on a 'cuda' device.
  with pytest.raises(exported.ExportError, match="NVIDIA GPU is 'cuda'"):
    exported.export(None, OPTIONS, str(tmp_path / "out"), platforms=("gpu",))
  assert not (tmp_path / "out").exists()
