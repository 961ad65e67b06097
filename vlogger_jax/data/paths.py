"""Where a dataset is: a dataset folder checked against this code's version, or a config's one.

resolve(path)             the version folder of a finished, readable dataset, given it or its
                          parent
dataset_dir(data_config)  the dataset a config's `data` section names, the synthetic one built
                          first when missing
"""

from __future__ import annotations

import json
import os

from vlogger_jax.data import builders
from vlogger_jax.data import statistics


def resolve(path: str) -> str:
  """The version folder of a dataset given it or its parent; ValueError in one sentence if none."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"dataset path {path} does not exist; expected a folder written by "
                     "launch/build_dataset.py.")
  version = builders.VERSION
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    if os.path.exists(os.path.join(path, version, "dataset_info.json")):
      path = os.path.join(path, version)
    else:
      found = sorted(d for d in os.listdir(path)
                     if os.path.exists(os.path.join(path, d, "dataset_info.json")))
      raise ValueError(f"dataset path {path} holds no dataset of version {version} (found "
                       f"{', '.join(found) or 'none'}); expected the folder of a dataset built "
                       "by this version of launch/build_dataset.py.")
  with open(os.path.join(path, "dataset_info.json")) as f:
    built = json.load(f).get("version", "")
  if built.split(".")[0] != version.split(".")[0]:
    raise ValueError(f"dataset {path} has version {built}; expected {version} (build it "
                     f"again with `{builders.rebuild_command(path)}`).")
  if not os.path.exists(os.path.join(path, statistics.STATS_FILE)):
    raise ValueError(f"dataset {path} lacks {statistics.STATS_FILE}; finish it by running "
                     f"`{builders.rebuild_command(path)}` again.")
  if (problem := builders.records_problem(path)):
    split, shard, reason = problem
    raise ValueError(f"split {split} of dataset {path} cannot be read "
                     f"({os.path.basename(shard)}: {reason}); "
                     f"expected readable records: build it again with "
                     f"`{builders.rebuild_command(path)}`.")
  return path


def dataset_dir(data_config) -> str:
  """The dataset a config's `data` section names, built first if it is the synthetic one.

  data.dataset 'synthetic' -> SyntheticTalkingHumans/<data.config_name> under data.data_dir
  (default ./data); 'folder' -> a dataset already built from .npz clips at data.path.
  """
  if data_config.dataset == "synthetic":
    return builders.ensure_synthetic(data_config.data_dir or "data", data_config.config_name)
  if data_config.dataset == "folder":
    return resolve(data_config.path)
  raise ValueError(f"data.dataset '{data_config.dataset}' is unknown; expected 'synthetic' or "
                   "'folder'.")
