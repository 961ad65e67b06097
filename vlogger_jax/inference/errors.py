"""The one error of generation's inputs."""


class InputError(ValueError):
  """An input of generation that cannot be used: one sentence saying which input, what is wrong
  with it and what is expected. The command line prints it alone, without a traceback."""
