"""Loaders of scikit-learn's digits and of Omniglot, plus helpers shared by the other loaders.

Every loader has the signature of :func:`ppvae.data.load_dataset` minus the name, so that the
registry can call them uniformly and each one can be called alone.
"""

from __future__ import annotations

import os

import numpy as np

from ppvae.errors import ConfigError

from .build import assemble, check_valid_size, hold_out, permutation
from .dataset import Dataset
from .readers import find_file, read_npz
from .root import resolve_root


def refuse_download(name: str, download: bool, where: str) -> None:
    """torchvision cannot fetch these files: say so, and where to get them, instead of ignoring
    the request."""
    if download:
        raise ConfigError(
            f"{name} cannot be downloaded automatically (torchvision does not provide it). "
            f"Get {where} (Sources and recipes of the staged copies: shared/datasets/README.md.) "
            f"Load it without download=True, with root= / PPVAE_DATA pointing at the folder that "
            f"holds it."
        )


def seeded_split(n: int, n_valid: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Index sets of a random train/valid/test split (shuffle, then slice, as VampPrior does).

    The test set is the tail of the permutation, so it does not change with ``n_valid``.
    """
    order = permutation(n, seed)
    cut_v, cut_t = n - n_test - n_valid, n - n_test
    return {"train": order[:cut_v], "valid": order[cut_v:cut_t], "test": order[cut_t:]}


def load_digits(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """scikit-learn's bundled 8x8 digits (the UCI "Optical Recognition of Handwritten Digits" test
    set; Alpaydin & Kaynak, 1998): 1,797 images, values 0-16 divided by 16.

    The offline default: it ships with scikit-learn, so ``root`` and ``download`` are ignored.
    Bernoulli with dynamic binarization; seeded split into train / ``valid_size`` (default 200) /
    200 test. Labels 0-9.
    """
    from sklearn.datasets import load_digits as sk_load_digits  # deferred: slow-ish import

    d = sk_load_digits()
    x, y = d.images, d.target
    n_test = 200
    valid_size = check_valid_size(
        200 if valid_size is None else valid_size, len(x) - n_test, "digits"
    )
    idx = seeded_split(len(x), valid_size, n_test, seed)
    return assemble(
        "digits",
        {s: x[i] for s, i in idx.items()},
        labels={s: y[i] for s, i in idx.items()},
        image_shape=(8, 8),
        likelihood="bernoulli",
        dynamic_binarization=True,
        scale=16.0,
        seed=seed,
        limit=limit,
    )


_OMNIGLOT = "Omniglot/omniglot_28x28_rebuild.npz"
_OMNIGLOT_WHERE = (
    "the original images (images_background.zip and images_evaluation.zip of "
    "https://github.com/brendenlake/omniglot) and rebuild omniglot_28x28_rebuild.npz from them "
    "(inverted, Lanczos-resized to 28x28)."
)


def load_omniglot(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Omniglot (Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through
    probabilistic program induction", Science 2015) at 28x28 from ``root/Omniglot/
    omniglot_28x28_rebuild.npz``.

    This is a rebuild from the original 105x105 images (Lanczos downsampling; drawings 1-15 train,
    16-20 test: 24,345 / 8,115), NOT Burda et al.'s ``chardata.mat`` used by IWAE/VampPrior, so
    numbers are not directly comparable to published ones. Grey levels / 255 with dynamic
    binarization; ``valid_size`` (default 1,345, as VampPrior) random training images are held out
    with ``seed``; valid and test are binarized once. Labels are alphabet ids 0-49.
    """
    name = "omniglot"
    refuse_download(name, download, _OMNIGLOT_WHERE)
    root_path, source = resolve_root(root)
    path = find_file(
        root_path, source, [_OMNIGLOT], dataset=name, how_to_get=f"get {_OMNIGLOT_WHERE}"
    )
    keys = ["x_train", "x_test", "y_train_alphabet", "y_test_alphabet"]
    a = read_npz(path, keys)
    x = a["x_train"]
    valid_size = check_valid_size(1345 if valid_size is None else valid_size, len(x), name)
    # The rows are sorted by character: a random hold-out, not the tail, keeps valid representative.
    xs, ys = hold_out(x, a["y_train_alphabet"], valid_size, order=permutation(len(x), seed))
    xs["test"], ys["test"] = a["x_test"], a["y_test_alphabet"]
    return assemble(
        name,
        xs,
        labels=ys,
        image_shape=tuple(x.shape[1:]),
        likelihood="bernoulli",
        dynamic_binarization=True,
        scale=255.0,
        seed=seed,
        limit=limit,
    )
