# %% [markdown]
# # vlogger_jax: train the tiny stages, then make a talking video
#
# Runtime > Change runtime type: a TPU or GPU runtime (a CPU one works, slowly). This notebook
# installs vlogger_jax, trains the tiny motion and video models on the synthetic talking-human
# data, generates a video of a held-out synthetic person saying a sentence, and shows it. The
# tiny stages are a pipeline check at 32², not a usable model: the person's colours and pose
# come out, the detail does not. The last cell loads your own trained stages instead.
#
# The notebook's code cells are notebooks/colab_script.py (tests/test_demo.py checks that they
# are equal, and CI runs the script on a CPU with VLOGGER_NOTEBOOK_QUICK=1).

# %%
# Install: on Colab, clone the repository and install it with the runtime's JAX; elsewhere (a
# checkout, CI) use the repository this runs in.
import os
import subprocess
import sys

REPO_URL = "https://github.com/YOUR_ACCOUNT/vlogger_jax.git"   # where your copy lives
if "google.colab" in sys.modules:
  if not os.path.isdir("vlogger_jax/.git"):
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, "vlogger_jax"], check=True)
  os.chdir("vlogger_jax")
  tpu = os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ
  gpu = subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0 if not tpu else False
  extra = "[tpu]" if tpu else "[cuda]" if gpu else ""
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f".{extra}"], check=True)
REPO = os.getcwd()
sys.path.insert(0, REPO)

# %%
# The accelerator: JAX takes a TPU first, then a GPU, else the CPU.
import jax

device = jax.devices()[0]
print(f"JAX {jax.__version__}: {jax.device_count()} x {device.platform.upper()} "
      f"({device.device_kind})")

# %%
# Train the tiny stages on the synthetic data (built first under DATA). QUICK: the fewest steps
# that still run every part (what CI runs); otherwise the tiny configs' own lengths.
QUICK = os.environ.get("VLOGGER_NOTEBOOK_QUICK") == "1"
WORK = os.environ.get("VLOGGER_NOTEBOOK_WORKDIR", os.path.join(REPO, "workdir", "colab"))
DATA = os.path.join(WORK, "data")
MOTION_DIR, VIDEO_DIR = os.path.join(WORK, "motion"), os.path.join(WORK, "base128")
common = [f"--config.data.data_dir={DATA}", "--config.data.config_name=tiny"]
# The tiny dataset's clips are short: motion windows of 24-48 frames.
motion_flags = common + ["--config.data.min_frames=24", "--config.data.max_frames=48",
                         "--config.sampling.overlap=24"] + (["--config.num_train_steps=40", "--config.batch_size=4",
                          "--config.log_every=20", "--config.eval_every=0",
                          "--config.checkpoint.every=40"] if QUICK else [])
video_flags = common + (["--config.num_train_steps=4", "--config.log_every=2",
                         "--config.checkpoint.every=4", "--config.evaluation.num_clips=0",
                         "--config.pretrain_stage.num_train_steps=60",
                         "--config.pretrain_stage.batch_size=2",
                         "--config.pretrain_stage.checkpoint.every=1000"] if QUICK else [])


def train(config, workdir, flags):
  """launch/train.py, its progress lines shown as they come; a rerun resumes."""
  subprocess.run([sys.executable, "launch/train.py", f"--config={config}",
                  f"--workdir={workdir}", *flags], cwd=REPO, check=True)


train("configs/motion.py:tiny", MOTION_DIR, motion_flags)
train("configs/base128.py:tiny", VIDEO_DIR, video_flags)

# %%
# Generate: a held-out synthetic person says TEXT (espeak-ng), with the stages just trained.
from vlogger_jax import speech
from vlogger_jax import video_io
from vlogger_jax.inference import pipeline
from vlogger_jax.inference import reference

TEXT = "Hello." if QUICK else "Hello! These stages trained for minutes on synthetic people."


# QUICK: DDIM with few steps (the tiny video run samples with DDPM over its whole schedule).
FEWER_STEPS = (dict(motion_sampler="ddim", motion_steps=4, video_sampler="ddim", video_steps=2)
               if QUICK else {})


def generate(motion, video, text=TEXT, identity=5, out=os.path.join(WORK, "colab.mp4")):
  pipe = pipeline.Pipeline.load(motion, video)
  ref = reference.synthetic(identity, pipe.resolution)
  wave = pipeline.Pipeline.speech(speech.synthesize(text).audio)
  result = pipe.generate(ref, wave, pipeline.Options(seed=0, **FEWER_STEPS))
  video_io.write_video(out, result.frames[0], result.fps, audio=result.audio)
  print(f"wrote {out}: {result.num_frames} frames at {pipe.resolution}², "
        f"{', '.join(f'{k} {v:.1f} s' for k, v in result.seconds.items())}")
  return result


result = generate(MOTION_DIR, VIDEO_DIR)

# %%
# Show it inline (the mp4 in WORK has the sound).
import mediapy

if "ipykernel" in sys.modules:
  mediapy.show_video(result.frames[0], fps=result.fps, height=256)

# %%
# Your own stages instead: run directories of launch/train.py or weights files
# (launch/export_weights.py); None takes the shipped default weights (128²).
MY_MOTION = None     # e.g. "/content/drive/MyDrive/vlogger/motion"
MY_VIDEO = None      # e.g. "/content/drive/MyDrive/vlogger/base128"
if not QUICK:
  mine = generate(MY_MOTION, MY_VIDEO, out=os.path.join(WORK, "mine.mp4"))
  if "ipykernel" in sys.modules:
    mediapy.show_video(mine.frames[0], fps=mine.fps, height=256)
