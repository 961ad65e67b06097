r"""A local web demo of generation: one page, in a browser, around the loaded pipeline.

  python launch/demo.py                      # the shipped default weights; prints the URL
  python launch/demo.py --port=0 --motion=workdir/motion --video=workdir/base128 \
      --sr=workdir/sr256,workdir/sr512

The page picks a synthetic identity (synthetic:N) or an uploaded reference (a reference .npz, or
an image with its parameters .npz; a plain photo gets the one-sentence message that photo fitting
is not built yet), takes speech as an uploaded audio file or typed text, the resolution (any
stage of the loaded cascade), the number of samples and the seed, and shows each sample's mp4
and the first sample beside its rendered controls, with a progress bar per stage. The stages
load once, when the server starts; requests then run one at a time, in the order they came.
Bad input is shown as the pipeline's one-sentence message (InputError), never a traceback.

The server is the standard library's (http.server), so the demo needs nothing beyond the
package: docs/generation.md ("Web demo") says why and lists its HTTP API, which the page's
fetch() calls and tests/test_demo.py drives with urllib:

  GET  /api/info               {"resolutions": [...], "max_samples": N, "max_seconds": S}
  POST /api/generate           JSON {identity, image?, params?, audio?, text?, resolution,
                               num_samples, seed}; files as {"name", "data": base64}
                               -> {"job": id}
  GET  /api/jobs/<id>          {"state": queued|running|done|error, "stage", "done", "total",
                               "error", "videos": [url], "controls": url, "seconds"}
  GET  /files/<id>/<name>.mp4  a result

It binds to 127.0.0.1 unless --host says otherwise (there is no authentication: anyone who can
reach the port can make the server work).
"""

import base64
import http.server
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback

from absl import flags, logging
import numpy as np

from vlogger_jax import audio as audio_lib
from vlogger_jax import cli
from vlogger_jax import speech as speech_lib
from vlogger_jax import video_io
from vlogger_jax.inference import flags as gen_flags
from vlogger_jax.inference import pipeline as pipeline_lib
from vlogger_jax.inference import reference as reference_lib
from vlogger_jax.inference.errors import InputError

_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every interface).")
_PORT = flags.DEFINE_integer("port", 7860, "Port; 0 takes a free one (the URL is printed).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 60.0, "Longest speech a request may give.")
_MAX_SAMPLES = flags.DEFINE_integer("max_samples", 4, "Most samples a request may ask for.")
_MAX_UPLOAD_MB = flags.DEFINE_float("max_upload_mb", 50.0, "Largest request body, in MiB.")
_KEEP = flags.DEFINE_integer("keep_results", 20, "Finished requests whose videos are kept.")
_VOICE = flags.DEFINE_string("voice", "en-us", "espeak-ng voice for typed text.")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class Job:
  """One request: its inputs' folder, its state and its outputs (read by the page's polling)."""

  def __init__(self, job_id: str, folder: str):
    self.id, self.folder = job_id, folder
    self.state, self.stage, self.done, self.total = "queued", "", 0, 0
    self.error, self.videos, self.controls, self.seconds = None, [], None, None

  def progress(self, stage: str, done: int, total: int) -> None:
    self.stage, self.done, self.total = stage, done, total

  def as_json(self) -> dict:
    return {"state": self.state, "stage": self.stage, "done": self.done, "total": self.total,
            "error": self.error, "videos": self.videos, "controls": self.controls,
            "seconds": self.seconds}


class Demo:
  """The loaded pipeline and the requests it serves, one generation at a time."""

  def __init__(self, pipe: pipeline_lib.Pipeline, root: str):
    self.pipe, self.root = pipe, root
    self.jobs: dict[str, Job] = {}
    self._ids = itertools.count(1)
    self._lock = threading.Lock()        # one generation at a time (one model on one device)
    self._jobs_lock = threading.Lock()

  def info(self) -> dict:
    return {"resolutions": list(self.pipe.resolutions), "max_samples": _MAX_SAMPLES.value,
            "max_seconds": _MAX_SECONDS.value}

  def submit(self, request: dict) -> Job:
    with self._jobs_lock:
      job_id = str(next(self._ids))
      job = Job(job_id, os.path.join(self.root, job_id))
      os.makedirs(job.folder)
      self.jobs[job_id] = job
      self._forget_old()
    threading.Thread(target=self._run, args=(job, request), daemon=True).start()
    return job

  def _forget_old(self) -> None:
    finished = [j for j in self.jobs.values() if j.state in ("done", "error")]
    for job in finished[:max(0, len(finished) - _KEEP.value)]:
      shutil.rmtree(job.folder, ignore_errors=True)
      del self.jobs[job.id]

  def _run(self, job: Job, request: dict) -> None:
    with self._lock:
      job.state = "running"
      try:
        self._generate(job, request)
        job.state = "done"
      except (InputError, video_io.VideoError) as e:
        # Uploads are named as the user named them, not by their place in the job's folder.
        job.error = " ".join(str(e).replace(job.folder + os.sep, "").split())
        job.state = "error"
      except Exception as e:  # pylint: disable=broad-except  (a bug: the server keeps serving)
        traceback.print_exc()
        job.error = (f"generation failed ({type(e).__name__}); the server's log has the "
                     "traceback.")
        job.state = "error"

  def _upload(self, job: Job, request: dict, field: str) -> str | None:
    """The path of an uploaded file ({"name", "data": base64}) in the job's folder, or None."""
    item = request.get(field)
    if not item:
      return None
    if not isinstance(item, dict) or not isinstance(item.get("data"), str):
      raise InputError(f"the {field} upload is malformed; expected a file.")
    name = _SAFE_NAME.sub("_", os.path.basename(str(item.get("name") or field))).strip(".")
    path = os.path.join(job.folder, name or field)
    try:
      data = base64.b64decode(item["data"], validate=True)
    except ValueError:
      raise InputError(f"the {field} upload '{name}' is not base64; expected a file.") from None
    with open(path, "wb") as f:
      f.write(data)
    return path

  def _options(self, request: dict) -> pipeline_lib.Options:
    def number(field, default, kind=int):
      value = request.get(field, default)
      if value in (None, ""):
        return default
      try:
        return kind(value)
      except (TypeError, ValueError):
        raise InputError(f"{field} '{value}' is not a number; expected a whole "
                         "number.") from None
    samples = number("num_samples", 1)
    if not 1 <= samples <= _MAX_SAMPLES.value:
      raise InputError(f"num_samples is {samples}; expected 1 to {_MAX_SAMPLES.value} "
                       "(--max_samples).")
    return gen_flags.options(num_samples=samples, seed=number("seed", 0),
                             resolution=number("resolution", None),
                             max_seconds=_MAX_SECONDS.value)

  def _reference(self, job: Job, request: dict) -> reference_lib.Reference:
    identity = str(request.get("identity") or "")
    if identity != "upload":
      if not identity.startswith("synthetic"):
        raise InputError(f"identity '{identity}' is neither synthetic:N nor an upload; "
                         "expected synthetic:N or an uploaded reference.")
      return reference_lib.parse(identity, None, self.pipe.resolution)
    image = self._upload(job, request, "image")
    if image is None:
      raise InputError("no reference was uploaded; expected a reference .npz, or an image "
                       "with its parameters .npz.")
    return reference_lib.load(image, self._upload(job, request, "params"))

  def _speech(self, job: Job, request: dict, max_seconds: float) -> np.ndarray:
    audio = self._upload(job, request, "audio")
    text = request.get("text") or None
    if audio is not None and text is not None:
      raise InputError("both an audio file and text were given; expected one source of "
                       "speech.")
    if audio is not None:
      return pipeline_lib.Pipeline.speech(audio, max_seconds)
    if text is None:
      raise InputError("no speech was given; expected an audio file or text.")
    job.progress("speech", 0, 1)
    try:
      spoken = speech_lib.synthesize(str(text), voice=_VOICE.value)
    except (ValueError, speech_lib.SpeechError) as e:
      raise InputError(f"text: {e}") from None
    job.progress("speech", 1, 1)
    return pipeline_lib.Pipeline.speech(spoken.audio, max_seconds)

  def _generate(self, job: Job, request: dict) -> None:
    """launch/generate.py's run, for one request: the samples and the controls video."""
    options = self._options(request)
    wave = self._speech(job, request, options.max_seconds)
    self.pipe.check(options)
    ref = self._reference(job, request)
    length = audio_lib.num_frames(wave.size)
    wave = wave[:audio_lib.num_samples_for_frames(length)]
    names = [f"sample_{i}.mp4" for i in range(options.num_samples)] + ["controls.mp4"]
    folder = lambda name: os.path.join(job.folder, name)
    result = self.pipe.write_videos(ref, wave, options, [folder(n) for n in names[:-1]],
                                    audio=wave, controls_path=folder(names[-1]),
                                    progress=job.progress)
    urls = [f"/files/{job.id}/{name}" for name in names]
    job.videos, job.controls = urls[:-1], urls[-1]
    job.seconds = {k: round(v, 2) for k, v in result.seconds.items()}


class Handler(http.server.BaseHTTPRequestHandler):
  """The page, the JSON API and the result files (module doc)."""

  demo: Demo = None  # set by serve()

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    del format, args   # quiet: a polling page would print a line every half second

  def _send(self, code: int, body: bytes, kind: str) -> None:
    self.send_response(code)
    self.send_header("Content-Type", kind)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    self.end_headers()
    self.wfile.write(body)

  def _json(self, code: int, data: dict) -> None:
    self._send(code, json.dumps(data).encode(), "application/json")

  def do_GET(self):  # pylint: disable=invalid-name
    path = self.path.split("?", 1)[0]
    if path == "/":
      self._send(200, PAGE.encode(), "text/html; charset=utf-8")
    elif path == "/api/info":
      self._json(200, self.demo.info())
    elif (m := re.fullmatch(r"/api/jobs/(\d+)", path)):
      job = self.demo.jobs.get(m.group(1))
      if job is None:
        self._json(404, {"error": f"request {m.group(1)} is unknown; expected one this server "
                                  "made (results are kept for the last few requests)."})
      else:
        self._json(200, job.as_json())
    elif (m := re.fullmatch(r"/files/(\d+)/((?:sample_\d+|controls)\.mp4)", path)):
      job = self.demo.jobs.get(m.group(1))
      file = os.path.join(job.folder, m.group(2)) if job and job.state == "done" else None
      if file is None or not os.path.isfile(file):
        self._json(404, {"error": "no such video."})
      else:
        with open(file, "rb") as f:
          self._send(200, f.read(), "video/mp4")
    else:
      self._json(404, {"error": f"'{path}' is not a page of this demo."})

  def do_POST(self):  # pylint: disable=invalid-name
    if self.path != "/api/generate":
      self._json(404, {"error": f"'{self.path}' takes no POST; expected /api/generate."})
      return
    size = int(self.headers.get("Content-Length") or 0)
    limit = int(_MAX_UPLOAD_MB.value * 2 ** 20)
    if size > limit:
      self._json(413, {"error": f"the request is {size / 2 ** 20:.1f} MiB, more than "
                                f"{_MAX_UPLOAD_MB.value:g} MiB; expected smaller files."})
      return
    try:
      request = json.loads(self.rfile.read(size) or b"{}")
      if not isinstance(request, dict):
        raise ValueError
    except ValueError:
      self._json(400, {"error": "the request is not a JSON object; expected the page's form "
                                "as JSON."})
      return
    self._json(200, {"job": self.demo.submit(request).id})


def serve(host: str, port: int, pipe: pipeline_lib.Pipeline) -> None:
  root = tempfile.mkdtemp(prefix="vlogger_demo_")
  try:
    Handler.demo = Demo(pipe, root)
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    print(f"serving the demo on http://{shown}:{server.server_address[1]}/ (Ctrl-C stops it)",
          flush=True)
    server.serve_forever()
  finally:
    shutil.rmtree(root, ignore_errors=True)


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected argument '{argv[1]}'; expected only --flags (see --help).",
          file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  try:
    pipe = gen_flags.load_pipeline()
    pipe.check(gen_flags.options(max_seconds=_MAX_SECONDS.value))
    serve(_HOST.value, _PORT.value, pipe)
  except InputError as e:
    return cli.report(e)
  except OSError as e:   # the port is taken, or the address is not this machine's
    return cli.report(f"cannot serve on {_HOST.value}:{_PORT.value} ({e.strerror or e}); "
                      "expected a free port (--port=0 takes one) on an address of this machine.")
  except KeyboardInterrupt:
    print("stopped.", file=sys.stderr)
  return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vlogger_jax demo</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
fieldset{border:1px solid #ccc;border-radius:6px;margin:0 0 .8em;padding:.5em .8em}
legend{font-weight:600} label{margin-right:1em} textarea{width:100%;box-sizing:border-box}
#error{color:#b00020;font-weight:600;white-space:pre-wrap} .row{display:flex;gap:1.5em}
.row>div{flex:1} video{max-width:100%;background:#000;border-radius:4px}
button{font-size:1.05em;padding:.4em 1.4em} progress{width:60%}
</style></head><body>
<h1>vlogger_jax: one image + speech &rarr; a talking video</h1>
<div class="row"><div>
<form id="form">
<fieldset><legend>Person</legend>
<label><input type="radio" name="who" value="synthetic" checked> synthetic identity
<input type="number" id="identity" value="5" min="0" style="width:5em"></label><br>
<label><input type="radio" name="who" value="upload"> upload: reference .npz, or an image</label>
<input type="file" id="image" accept=".npz,image/*"><br>
<label>&hellip;with its parameters .npz <input type="file" id="params" accept=".npz"></label>
</fieldset>
<fieldset><legend>Speech</legend>
<label><input type="radio" name="speech" value="text" checked> text</label>
<textarea id="text" rows="2">Hello! One photo and this sentence made this video.</textarea><br>
<label><input type="radio" name="speech" value="audio"> audio file</label>
<input type="file" id="audio" accept="audio/*,video/*">
</fieldset>
<fieldset><legend>Options</legend>
<label>resolution <select id="resolution"></select></label>
<label>samples <input type="number" id="num_samples" value="1" min="1" style="width:4em"></label>
<label>seed <input type="number" id="seed" value="0" style="width:6em"></label>
</fieldset>
<button type="submit" id="go">Generate</button>
</form>
<p><progress id="bar" value="0" max="1" hidden></progress> <span id="status"></span></p>
<p id="error"></p>
</div><div id="results"></div></div>
<script>
const $ = id => document.getElementById(id);
fetch('/api/info').then(r => r.json()).then(info => {
  for (const r of info.resolutions) $('resolution').add(new Option(r + '\u00b2', r));
  $('resolution').value = info.resolutions[info.resolutions.length - 1];
  $('num_samples').max = info.max_samples;
});
function readFile(input) {
  const file = input.files[0];
  if (!file) return Promise.resolve(null);
  return new Promise((ok, fail) => {
    const reader = new FileReader();
    reader.onload = () => ok({name: file.name, data: reader.result.split(',')[1] || ''});
    reader.onerror = () => fail(new Error('could not read ' + file.name));
    reader.readAsDataURL(file);
  });
}
function video(url, title) {
  return '<h3>' + title + '</h3><video controls autoplay loop src="' + url +
         '"></video><br><a href="' + url + '" download>download</a>';
}
$('form').onsubmit = async ev => {
  ev.preventDefault();
  $('error').textContent = ''; $('go').disabled = true;
  const who = document.querySelector('input[name=who]:checked').value;
  const speech = document.querySelector('input[name=speech]:checked').value;
  try {
    const req = {identity: who == 'upload' ? 'upload' : 'synthetic:' + $('identity').value,
                 resolution: $('resolution').value, num_samples: $('num_samples').value,
                 seed: $('seed').value};
    if (who == 'upload') { req.image = await readFile($('image')); req.params = await readFile($('params')); }
    if (speech == 'text') req.text = $('text').value; else req.audio = await readFile($('audio'));
    const sent = await (await fetch('/api/generate', {method: 'POST', body: JSON.stringify(req)})).json();
    if (sent.error) throw new Error(sent.error);
    $('bar').hidden = false;
    while (true) {
      const job = await (await fetch('/api/jobs/' + sent.job)).json();
      $('bar').max = job.total || 1; $('bar').value = job.done;
      $('status').textContent = job.state == 'queued' ? 'waiting for the request before it' :
          job.state == 'running' ? job.stage + ' ' + job.done + '/' + job.total : '';
      if (job.state == 'error') throw new Error(job.error);
      if (job.state == 'done') {
        $('results').innerHTML = job.videos.map((u, i) => video(u, 'sample ' + i)).join('') +
            video(job.controls, 'sample 0 beside its controls');
        $('status').textContent = 'done: ' + Object.entries(job.seconds)
            .map(([k, v]) => k + ' ' + v + ' s').join(', ');
        break;
      }
      await new Promise(ok => setTimeout(ok, 500));
    }
  } catch (e) { $('error').textContent = e.message; $('status').textContent = ''; }
  $('bar').hidden = true; $('go').disabled = false;
};
</script></body></html>
"""


if __name__ == "__main__":
  cli.run(main)
