"""The command-line conventions of every absl script in launch/: `run` instead of `app.run`.

* `--help`, `--helpshort`, `--helpfull` and `--helpxml` print their text and exit 0 (absl exits 1,
  which scripts and users read as a failure).
* A flag absl cannot parse (an unknown flag, a bad value, a required flag left out) is one
  sentence on stderr and exit 1, not absl's two lines or a traceback.
* `report(error)` prints an error as one sentence, `error: ...`, on stderr; with the environment
  variable VLOGGER_TRACEBACK=1 its traceback comes first (for bug reports).
* `entry(run, errors, interrupted)` is the usual `main`: no positional arguments, logging at
  warnings, `errors` reported as one sentence, Ctrl-C as one line.

    def main(argv):
      try:
        ...
      except ValueError as e:
        return cli.report(e)

    if __name__ == "__main__":
      cli.run(main)
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Callable

from absl import app
from absl import flags
from absl import logging

TRACEBACK_ENV = "VLOGGER_TRACEBACK"
_HELP = re.compile(r"--?(help|helpshort|helpfull|helpxml|\?)(=(true|t|1|yes|y))?", re.IGNORECASE)


def traceback_wanted() -> bool:
  """Whether VLOGGER_TRACEBACK asks for tracebacks (any value but '', 0, false, no)."""
  return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _one_line(error) -> str:
  return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def report(error: BaseException | str, code: int = 1) -> int:
  """Prints `error: <error>` on stderr, after the exception's traceback when VLOGGER_TRACEBACK=1;
  returns `code` (for `return cli.report(e)` in a main)."""
  if isinstance(error, BaseException) and traceback_wanted():
    traceback.print_exception(error)
  print(f"error: {_one_line(error)}", file=sys.stderr, flush=True)
  return code


def asked_for_help(argv: list[str]) -> bool:
  """Whether argv (program name first) holds a help flag before any `--`."""
  for arg in argv[1:]:
    if arg == "--":
      return False
    if _HELP.fullmatch(arg):
      return True
  return False


def _flags_error(error: Exception) -> str:
  """One sentence for an absl flags error (required flags left out are named together)."""
  missing = re.findall(r"Flag --(\S+) must have a value other than None", str(error))
  if missing:
    names = " and ".join(f"--{name}" for name in missing)
    return (f"{names} {'is' if len(missing) == 1 else 'are'} required; expected a value for "
            f"{'it' if len(missing) == 1 else 'each'} (see --help).")
  message = _one_line(error).rstrip(".")
  if (bad := re.match(r"flag (--[^=\s]+)=", message)):  # a value the flag's parser refused
    return f"{message[len('flag '):]}; expected a value that {bad.group(1)} accepts (see --help)."
  return f"{message}; expected the flags that --help lists."


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with the conventions of the module doc; returns the remaining argv."""
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:
    if e.code == 1 and asked_for_help(argv):
      raise SystemExit(0) from None
    raise
  except flags.Error as e:
    sys.exit(report(_flags_error(e)))
  except Exception as e:  # pylint: disable=broad-except  (a config flag's own parser raised)
    if traceback_wanted():
      traceback.print_exception(e)
    sys.exit(report(f"the command-line flags could not be parsed ({type(e).__name__}: "
                    f"{_one_line(e)}); expected the flags that --help lists."))


def run(main: Callable[[list[str]], int | None]) -> None:
  """app.run(main) with the conventions of the module doc; main's return value is the exit
  status."""
  app.run(main, flags_parser=parse_flags)


def entry(run_fn: Callable[[], int | None], errors: tuple = (ValueError, OSError),
          interrupted: str | None = None) -> Callable[[list[str]], int]:
  """The `main(argv)` of a script whose work is `run_fn()`: no positional arguments (exit 2),
  absl logging at warnings, the expected `errors` as one sentence (`report`), and Ctrl-C as
  'interrupted: ' + `interrupted` with exit 130 (re-raised where `interrupted` is None)."""
  def main(argv: list[str]) -> int:
    if len(argv) > 1:
      print(f"error: unexpected argument '{argv[1]}'; expected only --flags (see --help).",
            file=sys.stderr)
      return 2
    logging.set_verbosity(logging.WARNING)
    try:
      return run_fn()
    except errors as e:
      return report(e)
    except KeyboardInterrupt:
      if interrupted is None:
        raise
      print(f"interrupted: {interrupted}", file=sys.stderr)
      return 130
  return main
