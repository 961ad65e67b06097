r"""Exports the generation's samplers as jax.export artifacts with their parameters and a
manifest (docs/generation.md, "Exported samplers").

  python launch/export.py --out=exported/                       # the shipped default weights
  python launch/export.py --motion=motion.npz --video=base128.npz --sr=sr256.npz \
      --video_sampler=ddim --video_steps=50 --windows_per_chunk=4 --out=exported/

--motion, --video, --sr: run directories or weights files, as launch/generate.py takes them.
The sampler flags mirror generate.py's and are baked into the artifacts (the manifest records
them). Each artifact is lowered for those of --platforms that this jax can lower it for.
launch/generate_exported.py (or vlogger_jax.inference.exported.load) generates from the folder.
"""


from absl import flags

from vlogger_jax import cli
from vlogger_jax import fileio
from vlogger_jax.inference import exported
from vlogger_jax.inference import flags as gen_flags
from vlogger_jax.inference.errors import InputError

_OUT = flags.DEFINE_string("out", None, "Folder for the artifacts, parameters and manifest.")
_NO_MOTION = flags.DEFINE_bool("no_motion", False, "Export no motion artifact (generation "
                               "from per-frame parameters only).")
_PLATFORMS = flags.DEFINE_list("platforms", list(exported.PLATFORMS), "Platforms to lower for "
                               "(those this jax cannot lower for are left out).")
_WINDOWS = flags.DEFINE_integer("windows_per_chunk", 4, "Windows per artifact call: the fixed "
                                "chunk length of every artifact.")


def run() -> int:
  if not _OUT.value:
    raise InputError("--out is required; expected a folder for the artifacts, e.g. "
                     "--out=exported/.")
  fileio.check_output_folder(_OUT.value, "--out")
  unknown = [p for p in _PLATFORMS.value if p not in exported.PLATFORMS]
  if unknown or not _PLATFORMS.value:
    raise InputError(f"--platforms names '{','.join(unknown)}'; expected some of "
                     f"{', '.join(exported.PLATFORMS)}.")
  options = gen_flags.options(windows_per_chunk=_WINDOWS.value)
  pipe = gen_flags.load_pipeline(need_motion=not _NO_MOTION.value)
  manifest = exported.export(pipe, options, _OUT.value, tuple(_PLATFORMS.value))
  print(f"wrote {len(manifest['artifacts'])} artifacts and their manifest to {_OUT.value}")
  return 0


# ExportError and fileio's errors are ValueErrors.
main = cli.entry(run, errors=(InputError, ValueError, OSError))


if __name__ == "__main__":
  cli.run(main)
