"""Constants and helpers shared by all of tf_smelu."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, NoReturn

from absl import app, flags

KERAS_PACKAGE = "tf_smelu"
"""Package name under which tf_smelu's Keras objects are registered for serialization."""

MISSING = object()
"""Stands for a field one side of `field_differences` does not have."""


def derived_seed(*entropy: int) -> int:
    """A non-negative 31-bit seed determined by `entropy` (NumPy's `SeedSequence`).

    The one derivation of every replica's and ensemble member's seeds
    (`tf_smelu.experiment.seeds`, `tf_smelu.remedies.ensemble`): distinct
    entropy gives statistically independent seeds.
    """
    import numpy as np  # here: the error-style helpers of this module stay light to import

    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0] & 0x7FFFFFFF)


def field_differences(
    old: Mapping[str, object], new: Mapping[str, object], ignore: Iterable[str] = ()
) -> list[tuple[str, object, object]]:
    """`(name, old value, new value)` for every field whose value differs.

    A field on one side only differs, with `MISSING` on the other. Fields of
    `new` come first, in its order, then those only `old` has; `ignore`d
    names are left out. Used wherever a run must match what an earlier run
    wrote (results files, checkpoints), so that the message names every
    field that stops it.
    """
    ignore = set(ignore)
    names = [*new, *(name for name in old if name not in new)]
    return [(name, old.get(name, MISSING), new.get(name, MISSING)) for name in names
            if name not in ignore and old.get(name, MISSING) != new.get(name, MISSING)]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file next to `path` that replaces `path` on success.

    Readers never see a half-written file, and an error inside the block
    leaves any previous `path` intact (the temporary file is removed).

    Example:

    >>> with atomic_write("/tmp/result.json") as f:
    ...     _ = f.write("{}")

    Args:
        path: The file to write; its directory is created if missing.
        mode: `"w"` (text, UTF-8) or `"wb"` (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"`mode` must be 'w' or 'wb'. Received: mode={mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".")
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


class UserError(Exception):
    """A mistake in what the user gave (flags, files, directories).

    Command lines run through `run_program` print it as one line, without a
    Python traceback. Raise a subclass (or mix it into a `ValueError`
    subclass) for errors whose message names what is wrong and where.
    """


class Terminated(BaseException):
    """SIGTERM arrived: how `timeout`, Slurm and Kubernetes stop a job.

    Raised in the main thread, like `KeyboardInterrupt` for Ctrl-C, so that
    `finally` blocks stop child processes and finished work stays written. A
    `BaseException`, so that `except Exception` does not swallow it.
    """


def _raise_terminated(signum: int, frame: object) -> NoReturn:
    raise Terminated


def handle_sigterm() -> None:
    """Makes SIGTERM raise `Terminated` in the main thread (`run_program` does this).

    Call it again after a library replaced the handler: TensorFlow's
    multi-worker runtime installs one that ignores SIGTERM. Does nothing
    outside the main thread, where Python cannot handle signals.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _fail(message: str, exit_code: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def _parse_flags_in_one_line(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _fail(f"{error} (see --help)")


def run_program(
    main: Callable[[list[str]], int | None],
    user_errors: tuple[type[BaseException], ...] = (),
    argv: list[str] | None = None,
) -> None:
    """Runs an absl `main` in the error style of every tf_smelu command line.

    A user's mistake (a bad flag, `app.UsageError`, `UserError` or one of
    `user_errors`, e.g. a damaged data file) ends with one line
    `error: <what and where>` on stderr and exit code 1; Ctrl-C ends with one
    line and exit code 130, SIGTERM (see `Terminated`) with one line and exit
    code 143 (128 + 15, as the shell reports a process it ended). Anything
    else is a bug and keeps its traceback. `--debug` (defined here) shows the
    traceback of every error, for bug reports.

    Args:
        main: The program's `main(argv)`.
        user_errors: More exception types that mean a user's mistake.
        argv: The command line (default `sys.argv`).
    """
    if "debug" not in flags.FLAGS:
        # Defined for the main module, so that its --help lists it.
        flags.DEFINE_boolean(
            "debug", False, "Show the Python traceback of an error (for bug reports) instead "
            "of one line.", module_name=sys.argv[0])
    expected = (app.UsageError, UserError, *user_errors)

    def main_in_one_line(argv: list[str]) -> int | None:
        try:
            return main(argv)
        except expected as error:
            if flags.FLAGS.debug:
                raise
            _fail(str(error) or type(error).__name__)
        except KeyboardInterrupt:
            if flags.FLAGS.debug:
                raise
            _fail("interrupted (Ctrl-C); what had finished is kept", exit_code=130)
        except Terminated:
            if flags.FLAGS.debug:
                raise
            _fail("terminated (SIGTERM); what had finished is kept", exit_code=128 + 15)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    handle_sigterm()
    try:
        app.run(main_in_one_line, argv=argv, flags_parser=_parse_flags_in_one_line)
    finally:
        if previous is not None:  # None: set outside Python, cannot be restored
            signal.signal(signal.SIGTERM, previous)
