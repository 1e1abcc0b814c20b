"""Constants and helpers shared by all of tf_smelu."""

from __future__ import annotations

import atexit
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

    Args:
        *entropy: Non-negative integers (e.g. a base seed, a replica index
            and a source's number).

    Returns:
        A seed in `[0, 2**31 - 1]`, the same for the same `entropy`.
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

    Args:
        old: The fields an earlier run wrote.
        new: The fields of this run.
        ignore: Names whose values may differ.

    Returns:
        The differing fields, `MISSING` standing for an absent side.
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

    Examples:
        >>> with atomic_write("/tmp/result.json") as f:
        ...     _ = f.write("{}")

    Args:
        path: The file to write; its directory is created if missing.
        mode: `"w"` (text, UTF-8) or `"wb"` (binary).

    Yields:
        The open temporary file, to write `path`'s new contents to.

    Raises:
        ValueError: if `mode` is neither `"w"` nor `"wb"`.
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


def handle_sigterm() -> None:
    """Makes SIGTERM raise `Terminated` in the main thread (`run_program` does this).

    Call it again after a library replaced the handler: TensorFlow's
    multi-worker runtime installs one that ignores SIGTERM. Does nothing
    outside the main thread, where Python cannot handle signals.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _STOPS.handle)


def _fail(message: str, exit_code: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


_STOP_SIGNALS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


class _StopSignals:
    """Remembers that SIGINT or SIGTERM arrived, then raises as usual.

    Python prints and drops an exception raised in a `__del__` (TensorFlow
    frees iterators and functions there) or another place that ignores
    errors, so a Ctrl-C that lands in such cleanup is lost and the program
    would go on and exit 0. The first signal that arrived decides the exit
    code however the program ends.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def handle(self, signum: int, frame: object) -> NoReturn:
        if self.received is None:
            self.received = signum
        if signum == signal.SIGTERM:
            raise Terminated
        raise KeyboardInterrupt

    def exit_code(self) -> int:
        return 128 + self.received

    def install(self) -> dict[int, object]:
        """Forgets earlier signals and installs `handle`; returns the replaced handlers.

        An ignored SIGINT stays ignored (a job started in the background with
        `&` or `nohup` must not stop at the terminal's Ctrl-C).
        """
        self.received = None
        previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
        previous = {signum: handler for signum, handler in previous.items()
                    if not (signum == signal.SIGINT and handler is signal.SIG_IGN)}
        for signum in previous:
            signal.signal(signum, self.handle)
        return previous


def _stopped(signum: int) -> NoReturn:
    """Ends the run after a stop signal: one line, exit code 128 + `signum`."""
    _fail(f"{_STOP_SIGNALS[signum]}; what had finished is kept", exit_code=128 + signum)


_STOPS = _StopSignals()


def _exit_at_once(signum: int, frame: object) -> NoReturn:
    """Ends the process now, after its program ended: see `_stop_at_once_from_now_on`."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        print(f"error: {_STOP_SIGNALS[signum]}; what had finished is kept", file=sys.stderr,
              flush=True)
    os._exit(128 + signum)


def _stop_at_once_from_now_on() -> None:
    """From the interpreter's exit on, a stop signal ends the process with its code at once.

    Registered with `atexit` by `run_program`: the program's work is done and
    written, and an exception raised now, while modules and TensorFlow's
    objects are torn down, would be dropped in a `__del__` and the process
    would exit 0.
    """
    if threading.current_thread() is threading.main_thread():
        for signum in _STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, _exit_at_once)


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
    code 143 (128 + 15, as the shell reports a process it ended), even when
    the signal's exception was raised where Python drops it (a `__del__`,
    e.g. TensorFlow's cleanup) and `main` went on to return, or arrived
    while the interpreter exits. Anything
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
        except (KeyboardInterrupt, Terminated) as stop:
            if flags.FLAGS.debug:
                raise
            _stopped(signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)

    in_main_thread = threading.current_thread() is threading.main_thread()
    stops = _STOPS
    previous = stops.install() if in_main_thread else {}
    previous_hook = sys.unraisablehook

    def drop_stops(unraisable) -> None:
        # A stop signal's exception dropped in a __del__ ends the run below, in one line.
        stop = isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated))
        if not stop or flags.FLAGS["debug"].value:
            previous_hook(unraisable)

    sys.unraisablehook = drop_stops
    try:
        app.run(main_in_one_line, argv=argv, flags_parser=_parse_flags_in_one_line)
    except SystemExit as exit_:
        if stops.received is None or exit_.code == stops.exit_code():
            raise
        # The signal's exception was dropped (e.g. inside a __del__): it still ends the run.
        _stopped(stops.received)
    finally:
        # Last registered, so first to run at exit: before the hooks of libraries, even
        # those registered while `main` ran; once, however many programs run.
        atexit.unregister(_stop_at_once_from_now_on)
        atexit.register(_stop_at_once_from_now_on)
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(signum, handler)
