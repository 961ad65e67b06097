r"""Times generation served three ways: in-process (Pipeline), from exported artifacts, and the web
demo; cold start and warm runs, each in a fresh process.

  python launch/benchmark_serving.py --seconds=10 --out=serving.json        # shipped weights
  python launch/benchmark_serving.py --video=vlogger_jax/assets/weights/base128.npz \
      --sr=sr256.npz,sr512.npz --seconds=10 --demo=false

The stage and sampler flags are launch/generate.py's (vlogger_jax/inference/flags.py). The
script exports the loaded pipeline with launch/export.py's code into a temporary folder for this
machine's platform, then starts itself once per way in a new process (`--part`), so that every
cold start pays what a user's first call pays: reading the weights or artifacts, tracing and
compiling. Each part generates --seconds of noise speech for held-out synthetic identity 0 with
seed 0, once cold and --repeats times warm, and the first sample's frames of both ways are
compared (they should be equal: docs/generation.md, "Exported samplers"). The demo part starts
launch/demo.py on a free localhost port, waits for it to serve, and times two identical requests
(an uploaded wav) until their mp4 is written.
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave as wave_lib

from absl import flags, logging
import jax
import numpy as np

from vlogger_jax import cli
from vlogger_jax import contracts
from vlogger_jax import fileio
from vlogger_jax.inference import exported
from vlogger_jax.inference import flags as gen_flags
from vlogger_jax.inference import reference as reference_lib

_SECONDS = flags.DEFINE_float("seconds", 10.0, "Video length.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Warm runs per way.")
_DEMO = flags.DEFINE_bool("demo", True, "Also time the web demo's start and requests.")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
_PART = flags.DEFINE_enum("part", "", ["", "pipeline", "exported"], "Internal: the way this "
                          "process times (the parent starts one process per way).")
_FOLDER = flags.DEFINE_string("folder", None, "Internal: the artifacts and inputs folder.")

def _wave(frames: int) -> np.ndarray:
  rng = np.random.default_rng(0)
  return (0.1 * rng.standard_normal(frames * contracts.SAMPLE_RATE // contracts.FPS)
          ).astype(np.float32)


def _timed(fn, repeats):
  t = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t
  warm = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    warm.append(time.perf_counter() - t)
  return out, first, float(np.median(warm))


def _part(way: str, folder: str) -> dict:
  frames = int(round(_SECONDS.value * contracts.FPS))
  wave = _wave(frames)
  t = time.perf_counter()
  if way == "pipeline":
    pipe = gen_flags.load_pipeline()
    options = gen_flags.options()
    ref = reference_lib.synthetic(0, pipe.resolution)
    load_s = time.perf_counter() - t
    run = lambda: pipe.generate(ref, wave, options).frames
  else:
    gen = exported.load(folder)
    ref = dict(np.load(os.path.join(folder, "reference.npz")))
    load_s = time.perf_counter() - t
    run = lambda: gen.generate(ref, wave=wave, seed=0)["frames"]
  loaded_at = time.time()
  out, first, warm = _timed(lambda: np.asarray(jax.block_until_ready(run())), _REPEATS.value)
  np.save(os.path.join(folder, f"frames_{way}.npy"), out[0])
  return {"loaded_at": loaded_at,
          "load_s": load_s, "first_generation_s": first, "warm_generation_s": warm,
          "frames": int(out.shape[1]), "resolution": int(out.shape[2])}


def _child(way: str, folder: str) -> dict:
  argv = [a for a in sys.argv[1:] if not a.startswith(("--part", "--folder", "--out", "--demo"))]
  started = time.time()
  proc = subprocess.run([sys.executable, __file__, *argv, f"--part={way}", f"--folder={folder}"],
                        capture_output=True, text=True, check=False)
  line = [l for l in proc.stdout.splitlines() if l.startswith("PART ")]
  if proc.returncode or not line:
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    raise RuntimeError(f"the {way} part failed (exit {proc.returncode}).")
  row = json.loads(line[-1][5:])
  row["process_to_loaded_s"] = row.pop("loaded_at") - started   # imports, weights, inputs
  return row


def _write_wav(path: str, wave: np.ndarray) -> None:
  with wave_lib.open(path, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(contracts.SAMPLE_RATE)
    w.writeframes((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes())


def _demo(folder: str) -> dict:
  argv = [a for a in sys.argv[1:] if a.startswith(("--motion", "--video", "--sr", "--overlap"))]
  t0 = time.perf_counter()
  server = subprocess.Popen([sys.executable, "launch/demo.py", "--port=0", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    url = None
    for line in server.stdout:
      if (m := re.search(r"(http://127\.0\.0\.1:\d+)/", line)):
        url = m.group(1)
        break
    if url is None:
      raise RuntimeError("the demo did not start.")
    row = {"start_s": time.perf_counter() - t0}
    path = os.path.join(folder, "speech.wav")
    _write_wav(path, _wave(int(round(_SECONDS.value * contracts.FPS))))
    with open(path, "rb") as f:
      audio = {"name": "speech.wav", "data": base64.b64encode(f.read()).decode()}
    body = json.dumps({"identity": "synthetic:0", "audio": audio, "seed": 0}).encode()
    for name in ("first_request_s", "second_request_s"):
      t = time.perf_counter()
      with urllib.request.urlopen(urllib.request.Request(f"{url}/api/generate", body)) as r:
        job = json.load(r)["job"]
      while True:
        with urllib.request.urlopen(f"{url}/api/jobs/{job}") as r:
          state = json.load(r)
        if state["state"] in ("done", "error"):
          break
        time.sleep(0.05)
      row[name] = time.perf_counter() - t
      row["state"] = state["state"] + (f": {state['error']}" if state.get("error") else "")
    return row
  finally:
    server.terminate()
    server.wait(timeout=30)


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected argument '{argv[1]}'; expected only --flags.", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  # A stopped benchmark (timeout sends SIGTERM) takes its child processes with it: SystemExit
  # unwinds subprocess.run, which kills its child, and _demo's finally, which stops the server.
  # Orphans would go on holding the accelerator.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  if _PART.value:
    print("PART " + json.dumps(_part(_PART.value, _FOLDER.value)), flush=True)
    return 0
  if _SECONDS.value <= 0 or _REPEATS.value < 1:
    print(f"error: --seconds {_SECONDS.value:g}, --repeats {_REPEATS.value}; expected positive "
          "values.", file=sys.stderr)
    return 1
  with tempfile.TemporaryDirectory() as folder:
    pipe = gen_flags.load_pipeline()
    options = gen_flags.options()
    ref = reference_lib.synthetic(0, pipe.resolution)
    np.savez(os.path.join(folder, "reference.npz"), image=ref.image, shape=ref.shape,
             fov=ref.fov, **{k: getattr(ref, k) for k in contracts.FRAME_KEYS})
    t = time.perf_counter()
    platform = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    exported.export(pipe, options, folder, platforms=(platform,), log=lambda *a: None)
    export_s = time.perf_counter() - t
    del pipe
    rows = {"pipeline": _child("pipeline", folder), "exported": _child("exported", folder)}
    a, b = (np.load(os.path.join(folder, f"frames_{w}.npy")) for w in ("pipeline", "exported"))
    diff = int(np.abs(a.astype(int) - b.astype(int)).max())
    if _DEMO.value:
      rows["demo"] = _demo(folder)
  seconds = _SECONDS.value
  print(f"{jax.devices()[0].device_kind}: {seconds:g} s of video at {rows['pipeline']['resolution']}² "
        f"({rows['pipeline']['frames']} frames); export {export_s:.1f} s; exported frames differ "
        f"from the pipeline's by at most {diff}/255")
  for way in ("pipeline", "exported"):
    r = rows[way]
    print(f"  {way:>9}: loaded {r['process_to_loaded_s']:.1f} s after process start (load "
          f"{r['load_s']:.1f} s), first generation {r['first_generation_s']:.2f} s, warm "
          f"{r['warm_generation_s']:.3f} s ({r['warm_generation_s'] / seconds:.3f} s per video s)")
  ratio = rows["exported"]["warm_generation_s"] / rows["pipeline"]["warm_generation_s"]
  print(f"  exported / in-process, warm: {ratio:.3f}")
  if "demo" in rows:
    d = rows["demo"]
    print(f"       demo: serving {d['start_s']:.1f} s after start, first request "
          f"{d['first_request_s']:.2f} s, second {d['second_request_s']:.2f} s ({d['state']})")
  if _OUT.value:
    fileio.write_json(_OUT.value, {"device": jax.devices()[0].device_kind, "seconds": seconds,
                                   "export_s": export_s, "max_frame_diff": diff,
                                   "exported_over_pipeline": ratio, **rows})
  return 0


if __name__ == "__main__":
  cli.run(main)
