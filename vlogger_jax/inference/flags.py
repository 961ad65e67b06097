"""The command-line flags the generation entry points share (launch/generate.py, export.py,
demo.py): which stages to load, and each stage's sampler; `options` turns them into Options and
`load_pipeline` loads the stages they name (the shipped weights where a flag is left out).

Importing this module defines the flags in absl's global registry, so an entry point imports it
instead of defining them itself.
"""

from __future__ import annotations

from absl import flags

from vlogger_jax.inference import pipeline as pipeline_lib

MOTION = flags.DEFINE_string("motion", None, "Motion model: run directory or weights file.")
VIDEO = flags.DEFINE_string("video", None, "Base video model: run directory or weights file.")
SR = flags.DEFINE_list("sr", [], "Super-resolution stages after the base model, in order (run "
                       "directories or weights files, comma-separated): 256², then 512².")
MOTION_SAMPLER = flags.DEFINE_string("motion_sampler", None, "ddpm | ddim | dpm")
MOTION_STEPS = flags.DEFINE_integer("motion_steps", None, "Motion sampler steps.")
MOTION_GUIDANCE = flags.DEFINE_float("motion_guidance", None, "Motion guidance weight.")
VIDEO_SAMPLER = flags.DEFINE_string("video_sampler", None, "ddpm | ddim | dpm")
VIDEO_STEPS = flags.DEFINE_integer("video_steps", None, "Video sampler steps.")
VIDEO_ETA = flags.DEFINE_float("video_eta", None, "DDIM noise (0 deterministic, 1 ancestral).")
VIDEO_GUIDANCE = flags.DEFINE_float("video_guidance", None, "Video guidance weight.")
OVERLAP = flags.DEFINE_integer("overlap", None, "Video window overlap in frames (every stage).")
SR_SAMPLER = flags.DEFINE_string("sr_sampler", None, "ddpm | ddim | dpm (super-resolution)")
SR_STEPS = flags.DEFINE_integer("sr_steps", None, "Super-resolution sampler steps.")
SR_AUG = flags.DEFINE_float("sr_aug_level", None, "Super-resolution noise-conditioning "
                            "augmentation level in [0, 1].")


def options(**values) -> pipeline_lib.Options:
  """Options from the sampler flags, with `values` (num_samples, seed, resolution,
  max_seconds, windows_per_chunk...) beside them."""
  return pipeline_lib.Options(
      motion_sampler=MOTION_SAMPLER.value, motion_steps=MOTION_STEPS.value,
      motion_guidance=MOTION_GUIDANCE.value, video_sampler=VIDEO_SAMPLER.value,
      video_steps=VIDEO_STEPS.value, video_eta=VIDEO_ETA.value,
      video_guidance=VIDEO_GUIDANCE.value, video_overlap=OVERLAP.value,
      sr_sampler=SR_SAMPLER.value, sr_steps=SR_STEPS.value, sr_aug_level=SR_AUG.value,
      **values)


def load_pipeline(need_motion: bool = True) -> pipeline_lib.Pipeline:
  """The stages --motion, --video and --sr name (Pipeline.load)."""
  return pipeline_lib.Pipeline.load(MOTION.value, VIDEO.value, tuple(SR.value),
                                    need_motion=need_motion)
