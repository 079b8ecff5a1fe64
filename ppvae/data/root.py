"""Where dataset files live: the data root.

The root is resolved in a fixed order so that a run is reproducible from its command line and
environment: the ``root`` argument, then the ``PPVAE_DATA`` environment variable, then
``~/.cache/ppvae``. Every loader reports *which* of the three it used, because "file not found"
is much easier to fix when the message says whether the path came from the user or a default.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PPVAE_DATA"


def default_root() -> Path:
    """``~/.cache/ppvae``: the root used when neither an argument nor ``PPVAE_DATA`` is given."""
    return Path.home() / ".cache" / "ppvae"


def resolve_root(root: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Return ``(root, source)`` where ``source`` says where the root came from, for messages.

    An empty ``PPVAE_DATA`` counts as unset (``PPVAE_DATA= ppvae ...`` is a common way to unset it).
    """
    if root is not None:
        return Path(root).expanduser(), "from the root argument"
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser(), f"from ${ENV_VAR}"
    return default_root(), f"the default, since neither root nor ${ENV_VAR} was given"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$PPVAE_DATA``, else ``~/.cache/ppvae``.

    The folder is not created here; loaders create it only when asked to download.
    """
    return resolve_root(root)[0]
