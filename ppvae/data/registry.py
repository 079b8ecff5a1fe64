"""The registry of named datasets and :func:`load_dataset`, the one entry point the trainer and the
CLI use."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable

from ppvae.errors import ConfigError

from .build import check_limit, check_seed
from .dataset import Dataset
from .matfiles import load_caltech101, load_frey_face
from .mnist import load_binarized_mnist, load_fashion_mnist, load_mnist
from .sources import load_digits, load_omniglot

# Every loader takes (root=None, *, download=False, seed=0, valid_size=None, limit=None).
DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "binarized-mnist": load_binarized_mnist,
    "omniglot": load_omniglot,
    "frey-face": load_frey_face,
    "caltech101": load_caltech101,
}

DEFAULT_DATASET = "digits"  # bundled with scikit-learn: works offline with no data root


def _canonical(name: str) -> str:
    """Case and '_' vs '-' are forgiven: 'Fashion_MNIST' means 'fashion-mnist'."""
    key = str(name).strip().lower().replace("_", "-")
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, list(DATASETS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}. "
        f"For your own data use ppvae.data.load_file(path) (.npy/.npz) or from_array(x)."
    )


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load the named dataset (see :data:`DATASETS`) from the data root.

    ``root`` defaults to ``$PPVAE_DATA``, then ``~/.cache/ppvae``. ``download=True`` fetches MNIST
    and Fashion-MNIST with torchvision (other datasets raise :class:`ConfigError` saying where to
    get them). ``seed`` fixes random splits and the one-time binarization of valid/test: keep it
    fixed when comparing models. ``valid_size`` overrides the dataset's validation size (0: no
    validation data). ``limit`` keeps the first ``limit`` rows of each split, for quick runs.
    """
    loader = DATASETS[_canonical(name)]
    return loader(
        root,
        download=bool(download),
        seed=check_seed(seed),
        valid_size=valid_size,
        limit=check_limit(limit),
    )
