"""The layers of docs/architecture.md hold in the code: every import of vlogger_jax, at the top of
a module or inside a function, goes to a layer the importing layer may use."""

import ast
import os

from conftest import REPO

# Layer -> its modules (first component under vlogger_jax/), bottom to top.
LAYERS = {
    "foundations": {"contracts", "cli", "fileio", "mesh", "flops", "profiling", "timing",
                    "checkpoint", "geometry", "diffusion", "windowed_sampler", "audio", "speech",
                    "espeak_worker", "body", "video_io", "detector", "detector_worker"},
    "representations": {"head_procedural", "head", "head_flame", "motion", "render",
                        "motion_eval", "video_eval", "fitting"},
    "nn": {"nn"},
    "models": {"models"},
    "data": {"data"},
    "evaluators": {"evaluators"},
    "train": {"train"},
    "inference": {"inference"},
}
# Layer -> the layers below it that it may import (and itself).
MAY_USE = {
    "foundations": {"foundations"},
    "representations": {"foundations", "representations"},
    "nn": {"foundations", "representations", "nn"},
    "models": {"foundations", "representations", "nn", "models"},
    "data": {"foundations", "representations", "data"},          # never models/ or above
    "evaluators": {"foundations", "representations", "nn", "models", "evaluators"},
    "train": {"foundations", "representations", "nn", "models", "data", "evaluators", "train"},
    # Generation: the model layer and the data layer's synthetic references, never train/.
    "inference": {"foundations", "representations", "nn", "models", "data", "evaluators",
                  "inference"},
}


def _layer(module: str) -> str | None:
  parts = module.split(".")
  if parts[0] != "vlogger_jax" or len(parts) < 2:
    return None
  return next((name for name, members in LAYERS.items() if parts[1] in members), None)


def _modules():
  root = os.path.join(REPO, "vlogger_jax")
  for folder, _, files in os.walk(root):
    for f in sorted(files):
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        yield (name[:-len(".__init__")] if name.endswith(".__init__") else name), path


def _imports(path: str):
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names)


def test_every_module_has_a_layer_and_imports_only_what_its_layer_may_use():
  bad, unplaced = [], []
  for module, path in _modules():
    mine = _layer(module)
    if mine is None:
      if module != "vlogger_jax":
        unplaced.append(module)
      continue
    for target in _imports(path):
      theirs = _layer(target)
      if theirs is not None and theirs not in MAY_USE[mine]:
        bad.append(f"{module} ({mine}) imports {target} ({theirs})")
  assert not unplaced, f"modules without a layer (add them here and to docs/architecture.md): " \
                       f"{unplaced}"
  assert not bad, "\n".join(bad)


def test_the_architecture_doc_lists_every_module():
  with open(os.path.join(REPO, "docs", "architecture.md")) as f:
    doc = f.read()
  missing = [m for m, path in _modules()
             if os.path.basename(path) != "__init__.py"
             and f"`{os.path.relpath(path, REPO)}`" not in doc
             and f"`{os.path.relpath(os.path.dirname(path), REPO)}/`" not in doc]
  assert not missing, f"docs/architecture.md has no row for {missing}"
