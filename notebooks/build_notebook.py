"""Writes notebooks/vlogger_jax_colab.ipynb from notebooks/colab_script.py.

  python notebooks/build_notebook.py

The script is the source: its cells start at `# %%` lines (`# %% [markdown]`: a text cell of
`# ` comment lines). tests/test_demo.py checks that the notebook is what this writes.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "colab_script.py")
NOTEBOOK = os.path.join(HERE, "vlogger_jax_colab.ipynb")


def cells(script: str) -> list[dict]:
  """The notebook cells of the script's text."""
  out = []
  for block in script.split("# %%")[1:]:
    head, _, body = block.partition("\n")
    body = body.strip("\n")
    if head.strip() == "[markdown]":
      text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                       for line in body.splitlines())
      out.append({"cell_type": "markdown", "metadata": {}, "source": _lines(text)})
    else:
      out.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                  "source": _lines(body)})
  return out


def _lines(text: str) -> list[str]:
  lines = text.split("\n")
  return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def notebook() -> str:
  with open(SCRIPT) as f:
    nb = {"cells": cells(f.read()), "metadata": {
        "accelerator": "TPU", "colab": {"provenance": []},
        "kernelspec": {"display_name": "Python 3", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 0}
  return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
  with open(NOTEBOOK, "w") as f:
    f.write(notebook())
  print(f"wrote {NOTEBOOK}")
