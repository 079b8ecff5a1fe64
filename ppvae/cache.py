"""Where ppvae keeps what it computes once and reuses: the cache folder.

Trained evaluation artefacts (the MNIST classifier of :mod:`ppvae.sample_quality`, the feature
statistics of the real test images) are written to ``$PPVAE_CACHE`` if it is set, else to
``~/.cache/ppvae``. This is a setting of its own, separate from the *data root*
(``$PPVAE_DATA``, see :mod:`ppvae.data.root`): the data root may be read-only (in CI it is a copy
without write bits), so nothing is ever cached there, even when both happen to name the same
folder by default.
"""

from __future__ import annotations

import os
from pathlib import Path

from ppvae.errors import ConfigError

ENV_VAR = "PPVAE_CACHE"


def cache_dir() -> Path:
    """The cache folder, created on demand: ``$PPVAE_CACHE`` if set (an empty value counts as
    unset), else ``~/.cache/ppvae``.

    Raises :class:`~ppvae.errors.ConfigError` if the folder cannot be created or written.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "ppvae"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the ppvae cache folder {str(path)!r} ({exc.strerror or exc}); "
            f"set {ENV_VAR} to a writable folder"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the ppvae cache folder {str(path)!r} is not writable; set {ENV_VAR} to a writable "
            "folder (never the data root, which may be read-only)"
        )
    return path
