"""Loaders of the datasets distributed as MATLAB files: Frey Face and Caltech 101 Silhouettes."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ppvae.errors import DataError

from .build import assemble, check_valid_size
from .dataset import Dataset
from .readers import find_file, read_mat
from .root import resolve_root
from .sources import refuse_download, seeded_split


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain NumPy arrays and nothing else: a data file must not be able to run code."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("numpy.core"):  # pickles written by NumPy 1.x
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_frey(path: Path) -> np.ndarray:
    if path.suffix == ".mat":
        return read_mat(path, ["ff"])["ff"].T  # ff is (560, 1965): one image per column
    try:
        with open(path, "rb") as f:  # VampPrior's Python 2 pickle: [array (1965, 560)] == ff.T
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from None
    return np.asarray(obj[0] if isinstance(obj, (list, tuple)) else obj)


def load_frey_face(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Frey Face (Frey, Colmenarez & Huang, CVPR 1998; file distributed by S. Roweis): 1,965
    grey 28x20 faces from ``root/FreyFace/frey_rawface.mat`` (or VampPrior's ``freyfaces.pkl``).

    Continuous in [0, 1] (/ 255), normal likelihood, no binarization. Seeded random split with
    VampPrior's sizes: 1,565 train / ``valid_size`` (default 200) / 200 test. No labels.
    """
    name, where = "frey-face", "https://cs.nyu.edu/~roweis/data/frey_rawface.mat (S. Roweis)."
    refuse_download(name, download, where)
    root_path, source = resolve_root(root)
    candidates = ["FreyFace/frey_rawface.mat", "FreyFace/freyfaces.pkl"]
    path = find_file(root_path, source, candidates, dataset=name, how_to_get=f"download {where}")
    flat = _read_frey(path)
    if flat.ndim != 2 or flat.shape[1] != 28 * 20:
        raise DataError(f"{path}: expected 28x20 = 560 pixels per image, got shape {flat.shape}.")
    # Row-major (28, 20) of each ff column gives upright faces.
    x = flat.reshape(-1, 28, 20)
    n_test = 200
    valid_size = check_valid_size(200 if valid_size is None else valid_size, len(x) - n_test, name)
    idx = seeded_split(len(x), valid_size, n_test, seed)
    return assemble(
        name,
        {s: x[i] for s, i in idx.items()},
        image_shape=(28, 20),
        likelihood="normal",
        dynamic_binarization=False,
        scale=255.0,
        seed=seed,
        limit=limit,
    )


def load_caltech101(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    valid_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Caltech 101 Silhouettes 28x28 (Marlin, Swersky, Chen & de Freitas, "Inductive principles
    for Restricted Boltzmann Machine learning", AISTATS 2010) from ``root/Caltech101Silhouettes/
    caltech101_silhouettes_28.mat``: 8,671 binary images (1 = background), 101 classes.

    The official ``_split1`` file is not available, so this is a seeded random split with the
    sizes of VampPrior's split: 4,100 train / ``valid_size`` (default 2,264) / 2,307 test. Fixed
    binary data, no dynamic binarization. Labels 0-100 (``Y - 1``).
    """
    name = "caltech101"
    where = "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28.mat (B. Marlin)."
    refuse_download(name, download, where)
    root_path, source = resolve_root(root)
    rel = "Caltech101Silhouettes/caltech101_silhouettes_28.mat"
    path = find_file(root_path, source, [rel], dataset=name, how_to_get=f"download {where}")
    m = read_mat(path, ["X", "Y"])
    if m["X"].ndim != 2 or m["X"].shape[1] != 784 or m["Y"].size != len(m["X"]):
        raise DataError(
            f"{path}: expected X (N, 784) and Y (N,), got {m['X'].shape}, {m['Y'].shape}."
        )
    # Images are stored column-major (MATLAB): undo that so rows are upright row-major images.
    x = m["X"].reshape(-1, 28, 28, order="F").reshape(-1, 784)
    y = m["Y"].reshape(-1).astype(np.int64) - 1
    n_test = 2307
    valid_size = check_valid_size(2264 if valid_size is None else valid_size, len(x) - n_test, name)
    idx = seeded_split(len(x), valid_size, n_test, seed)
    return assemble(
        name,
        {s: x[i] for s, i in idx.items()},
        labels={s: y[i] for s, i in idx.items()},
        image_shape=(28, 28),
        likelihood="bernoulli",
        dynamic_binarization=False,
        seed=seed,
        limit=limit,
    )
