"""launch/compile_ahead.py: the train step compiled for meshes with more devices than the machine,
and the per-device bytes its shardings imply."""

import json

from conftest import run_python


def test_fsdp_halves_parameters_and_optimizer_state_per_device(tmp_path):
  out = tmp_path / "ca.json"
  run_python(["launch/compile_ahead.py", "--config=configs/toy.py:tiny", "--meshes=2x1,1x2",
              "--per_device_batch=4", f"--out={out}"], devices=2)
  data, fsdp = json.loads(out.read_text())["meshes"]
  assert (data["mesh"], fsdp["mesh"]) == ("2x1", "1x2")
  assert data["global_batch"] == fsdp["global_batch"] == 8
  # The toy's weights are sharded over 'fsdp' except a few small vectors (biases, norms).
  for key in ("params_bytes", "opt_state_bytes"):
    assert 0.45 < fsdp[key] / data[key] < 0.6, key
  assert data["temp_bytes"] > 0 and fsdp["temp_bytes"] < data["temp_bytes"]
  # Data parallel only reduces gradients; FSDP gathers the weights it sharded.
  assert "all-gather" not in data["collectives"] and fsdp["collectives"]["all-gather"] > 0


def test_a_machine_with_fewer_devices_restarts_with_fake_ones_and_a_bad_mesh_is_refused(tmp_path):
  out = tmp_path / "ca.json"
  run_python(["launch/compile_ahead.py", "--config=configs/toy.py:tiny", "--meshes=1x2",
              "--per_device_batch=1", f"--out={out}"], devices=1)
  assert json.loads(out.read_text())["meshes"][0]["devices"] == 2
  meshes = "0x2"
  proc = run_python(["launch/compile_ahead.py", "--config=configs/toy.py:tiny",
                     f"--meshes={meshes}"], check=False)
  assert proc.returncode != 0
  assert f"--meshes entry '{meshes}' is not DATAxFSDP" in proc.stderr
  assert "Traceback" not in proc.stderr
