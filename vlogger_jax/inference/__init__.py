"""Generation: image + speech -> video with the trained stages (docs/generation.md).

`pipeline.Pipeline` loads the stages (run directories or weights files; the shipped default
weights when none is given) and generates; `reference` makes the reference (a held-out synthetic
identity, a reference file, or an image with its parameters); `InputError` is the one error of
bad input, one sentence long.
"""

from vlogger_jax.inference.errors import InputError
