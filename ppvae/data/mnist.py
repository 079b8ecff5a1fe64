"""MNIST, Fashion-MNIST (torchvision's raw IDX layout) and the fixed binarization of MNIST."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ppvae.errors import DataError, DataNotFoundError

from .build import assemble, check_valid_size, hold_out
from .dataset import Dataset
from .readers import find_file, read_amat, read_idx
from .root import resolve_root
from .sources import refuse_download

_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TORCHVISION = "pass download=True (CLI: --download) to fetch it with torchvision."


def _candidates(folder: str, stem: str) -> list[str]:
    # torchvision keeps the .gz and also writes the uncompressed file next to it; accept either.
    return [f"{folder}/raw/{stem}.gz", f"{folder}/raw/{stem}"]


def _download(tv_class: str, folder: str, root: Path) -> None:
    """Fetch the four IDX files with torchvision unless they are all present already."""
    stems = [s for pair in _STEMS.values() for s in pair]
    if all(any((root / c).is_file() for c in _candidates(folder, s)) for s in stems):
        return  # nothing to do, and no network needed
    root.mkdir(parents=True, exist_ok=True)
    import torchvision.datasets  # deferred: torchvision is needed only to download

    try:
        getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
    except (
        OSError,
        RuntimeError,
    ) as exc:  # URLError is an OSError; torchvision raises RuntimeError
        raise DataNotFoundError(
            f"Downloading {tv_class} into {root / folder / 'raw'} failed: {exc}. Without network "
            f"access, copy the four *-idx?-ubyte.gz files there by hand."
        ) from None


def _load_idx(
    name: str,
    folder: str,
    tv_class: str,
    root: str | os.PathLike | None,
    download: bool,
    seed: int,
    valid_size: int | None,
    limit: int | None,
) -> Dataset:
    root_path, source = resolve_root(root)
    if download:
        _download(tv_class, folder, root_path)
    arrays = {}
    for split, stems in _STEMS.items():
        paths = [
            find_file(
                root_path, source, _candidates(folder, s), dataset=name, how_to_get=_HOW_TORCHVISION
            )
            for s in stems
        ]
        # The training file is read whole because the validation images are at its end.
        rows = limit if split == "test" else None
        x, y = read_idx(paths[0], rows), read_idx(paths[1], rows)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{name}: {paths[0].name} has shape {x.shape} and {paths[1].name} has shape "
                f"{y.shape}; expected (N, H, W) images with N matching labels."
            )
        arrays[split] = (x, y)
    x, y = arrays["train"]
    # No official validation split exists: hold out the *last* images (the usual convention,
    # deterministic and independent of the seed).
    valid_size = check_valid_size(10_000 if valid_size is None else valid_size, len(x), name)
    xs, ys = hold_out(x, y, valid_size)
    xs["test"], ys["test"] = arrays["test"]
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


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """MNIST (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
    recognition", Proc. IEEE 1998) from ``root/MNIST/raw/*-idx?-ubyte(.gz)``.

    Grey levels / 255 with dynamic binarization for training; the last ``valid_size`` (default
    10,000) training images are held out as validation; valid and test are binarized once with
    ``seed``. Labels 0-9.
    """
    return _load_idx("mnist", "MNIST", "MNIST", root, download, seed, valid_size, limit)


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf, arXiv:1708.07747, 2017) from
    ``root/FashionMNIST/raw/``, handled exactly like :func:`load_mnist`."""
    return _load_idx(
        "fashion-mnist", "FashionMNIST", "FashionMNIST", root, download, seed, valid_size, limit
    )


_AMAT = "BinarizedMNIST/binarized_mnist_{}.amat"
_AMAT_WHERE = (
    "the .amat files of Larochelle & Murray (http://www.cs.toronto.edu/~larocheh/public/"
    "datasets/binarized_mnist/binarized_mnist_{train,valid,test}.amat), gzipped or not."
)


def load_binarized_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """The fixed binarization of MNIST (Larochelle & Murray, "The Neural Autoregressive
    Distribution Estimator", AISTATS 2011) from ``root/BinarizedMNIST/binarized_mnist_*.amat(.gz)``.

    Official split 50,000 / 10,000 / 10,000, already binary (no dynamic binarization), no labels.
    ``valid_size=None`` keeps the official split; another value pools train + valid and holds out
    the last ``valid_size`` images (``valid_size=0`` trains on all 60,000). ``seed`` is unused.
    """
    name = "binarized-mnist"
    refuse_download(name, download, _AMAT_WHERE)
    root_path, source = resolve_root(root)
    how = f"download {_AMAT_WHERE}"
    paths = {
        s: find_file(
            root_path,
            source,
            [_AMAT.format(s) + ".gz", _AMAT.format(s)],
            dataset=name,
            how_to_get=how,
        )
        for s in ("train", "valid", "test")
    }
    if valid_size is None:
        # Only the first `limit` lines of each file are read: the official split needs no pooling.
        xs = {s: read_amat(p, max_rows=limit) for s, p in paths.items()}
    else:
        pool = np.concatenate([read_amat(paths["train"]), read_amat(paths["valid"])])
        valid_size = check_valid_size(valid_size, len(pool), name)
        xs, _ = hold_out(pool, None, valid_size)
        xs["test"] = read_amat(paths["test"], max_rows=limit)
    return assemble(
        name,
        xs,
        image_shape=(28, 28),
        likelihood="bernoulli",
        dynamic_binarization=False,
        limit=limit,
    )
