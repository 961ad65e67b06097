r"""Makes the landmark detector's own environment: a venv with mediapipe==0.10.21 (its models ship
inside the wheel), checked by loading it.

  python launch/install_detector.py                  # -> ~/.cache/vlogger_jax/detector-venv
  python launch/install_detector.py --venv DIR       # anywhere else (then VLOGGER_DETECTOR_VENV=DIR)
  python launch/install_detector.py -- --no-index --find-links WHEELS   # pip options, e.g. offline

mediapipe pins numpy<2 and protobuf<5, so it cannot share the main environment (DESIGN.md §5);
vlogger_jax/detector.py runs vlogger_jax/detector_worker.py with this environment's Python. The
venv uses the Python that runs this script (mediapipe 0.10.21 has wheels for 3.9-3.12). Running it
again on a working environment only checks it. Everything after `--` is passed to pip install.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

from vlogger_jax import detector


def main(argv) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--venv", default=None,
                      help=f"where to make it (default: {detector.default_venv()})")
  parser.add_argument("--python", default=sys.executable, help="the Python of the new venv")
  pip_args = argv[argv.index("--") + 1:] if "--" in argv else []
  args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
  venv = os.path.abspath(args.venv or detector.default_venv())
  start = time.perf_counter()
  try:
    print(f"detector environment {venv} is ready: mediapipe {detector.check(venv)}")
    return 0
  except detector.DetectorError:
    pass
  if os.path.exists(venv):
    if os.listdir(venv) and not os.path.exists(os.path.join(venv, "pyvenv.cfg")):
      print(f"error: --venv {venv} exists and is not a virtual environment; expected a new "
            "folder or a detector environment to repair.", file=sys.stderr)
      return 1
    shutil.rmtree(venv)  # a broken or half-made environment: start again
  os.makedirs(os.path.dirname(venv), exist_ok=True)
  try:
    subprocess.run([args.python, "-m", "venv", venv], check=True)
    # Without PYTHONPATH, which may point into the main environment (numpy 2, this package).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run([detector.venv_python(venv), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", f"mediapipe=={detector.MEDIAPIPE_VERSION}",
                    *pip_args], check=True, env=env)
  except KeyboardInterrupt:
    shutil.rmtree(venv, ignore_errors=True)
    raise
  except (subprocess.CalledProcessError, OSError) as e:
    # An interrupted or failed install leaves no environment that looks usable.
    shutil.rmtree(venv, ignore_errors=True)
    print(f"error: making the detector environment {venv} failed ({e}); expected Python "
          "3.9-3.12 with pip able to reach PyPI or the given index.", file=sys.stderr)
    return 1
  try:
    version = detector.check(venv)
  except detector.DetectorError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"made the detector environment {venv}: mediapipe {version} "
        f"({time.perf_counter() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
