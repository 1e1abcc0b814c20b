"""Constants and helpers shared by all of tf_smelu."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

KERAS_PACKAGE = "tf_smelu"
"""Package name under which tf_smelu's Keras objects are registered for serialization."""


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
