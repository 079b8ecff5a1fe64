"""Output locations checked before any work is done.

A run that computes for minutes and then fails to write its report because ``--out`` names a file
or a read-only folder wastes the whole computation. :func:`ensure_writable_dir` creates the folder
and proves it writable first, so the mistake surfaces immediately as a
:class:`~ppvae.errors.ConfigError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ppvae.errors import ConfigError


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) if needed and check that files can be written
    in it; return it as a :class:`Path`.

    Raises :class:`ConfigError` if ``path`` (or one of its parents) is an existing file, if the
    folder cannot be created, or if it is not writable (checked with ``os.access`` and by
    creating and deleting a temporary file in it).
    """
    p = Path(path).expanduser()
    for parent in (p, *p.parents):
        if parent.exists() and not parent.is_dir():
            where = "" if parent == p else f" ({parent} is a file)"
            raise ConfigError(
                f"{what} {str(p)!r} cannot be used: it is not a folder{where}; "
                "pass a folder path (it is created if missing)"
            )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the {what} {str(p)!r}: {exc.strerror or exc}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"the {what} {str(p)!r} is not writable; choose another folder")
    try:
        with tempfile.TemporaryFile(dir=p, prefix=".ppvae-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"the {what} {str(p)!r} is not writable ({exc.strerror or exc}); choose another folder"
        ) from None
    return p
