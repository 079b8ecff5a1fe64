"""User data: in-memory arrays and ``.npy`` / ``.npz`` files."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppvae.errors import ConfigError, DataError, DataNotFoundError

from .build import assemble, check_seed, permutation
from .checks import check_data, check_likelihood
from .dataset import Dataset
from .readers import read_npz


def _to_numpy(x: Any, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what}: expected a numeric array, got dtype {arr.dtype}.")
    return arr


def _flatten(x: np.ndarray, image_shape: Any, what: str) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, H, W) or (N, 1, H, W) images -> (N, H*W) plus their shape; (N, D) passes through."""
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]  # a single channel, as torchvision stores it
    if x.ndim == 3:
        shape = tuple(x.shape[1:]) if image_shape is None else tuple(image_shape)
        x = x.reshape(len(x), -1)
    elif x.ndim == 2:
        side = math.isqrt(x.shape[1])
        default = (side, side) if side * side == x.shape[1] else (1, x.shape[1])
        shape = default if image_shape is None else tuple(image_shape)
    else:
        check_data(x, "normal", what=what)  # raises the standard shape error
        raise AssertionError("unreachable")
    if len(shape) != 2 or math.prod(shape) != x.shape[1]:
        raise ConfigError(
            f"{what}: image_shape {shape} does not match D={x.shape[1]} values per row."
        )
    return x, (int(shape[0]), int(shape[1]))


def _likelihood(xs: list[np.ndarray], likelihood: str | None, dynamic: bool) -> str:
    """Infer the likelihood: {0,1} data -> bernoulli; grey levels -> bernoulli only when dynamic
    binarization is asked for; anything else -> normal."""
    if likelihood is not None:
        check_likelihood(likelihood)
        if dynamic and likelihood != "bernoulli":
            raise ConfigError(
                f"dynamic_binarization=True needs likelihood='bernoulli', got {likelihood!r}."
            )
        return likelihood
    if dynamic:  # check_data then reports grey levels outside [0, 1] explicitly
        return "bernoulli"
    binary = all(bool(np.isin(x, (0, 1)).all()) for x in xs if x.size)
    return "bernoulli" if binary else "normal"


def _fraction(value: float, what: str) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be in [0, 1), got {value!r}.")
    return float(value)


def from_array(
    x: np.ndarray | torch.Tensor,
    *,
    name: str = "array",
    likelihood: str | None = None,
    image_shape: tuple[int, int] | None = None,
    labels: np.ndarray | torch.Tensor | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    dynamic_binarization: bool = False,
) -> Dataset:
    """A :class:`Dataset` from one array of data points, split at random with ``seed``.

    ``x`` is (N, D), or (N, H, W) / (N, 1, H, W) images which are flattened row-major. With
    ``likelihood=None`` it is inferred: values in {0, 1} -> "bernoulli"; otherwise "normal",
    unless ``dynamic_binarization=True`` asks to treat grey levels in [0, 1] as Bernoulli
    probabilities (valid and test are then binarized once with ``seed``).
    """
    arr, shape = _flatten(_to_numpy(x, name), image_shape, name)
    check_data(arr, "normal", what=name)  # shape, emptiness and NaN/inf before inferring anything
    y = None if labels is None else _to_numpy(labels, f"{name} labels").reshape(-1)
    if y is not None and len(y) != len(arr):
        raise DataError(f"{name}: {len(y)} labels for {len(arr)} data points.")
    if y is not None and y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise DataError(f"{name}: labels must be integers (class ids), got dtype {y.dtype}.")
    n = len(arr)
    n_valid = round(_fraction(valid_fraction, "valid_fraction") * n)
    n_test = round(_fraction(test_fraction, "test_fraction") * n)
    if n - n_valid - n_test < 1:
        raise ConfigError(
            f"{name}: valid_fraction={valid_fraction} and test_fraction={test_fraction} leave no "
            f"training data out of {n} points."
        )
    order = permutation(n, check_seed(seed))
    cuts = {
        "train": order[: n - n_valid - n_test],
        "valid": order[n - n_valid - n_test : n - n_test],
    }
    cuts["test"] = order[n - n_test :]
    lik = _likelihood([arr], likelihood, dynamic_binarization)
    return assemble(
        name,
        {s: arr[i] for s, i in cuts.items()},
        labels={s: None if y is None else y[i] for s, i in cuts.items()},
        image_shape=shape,
        likelihood=lik,
        dynamic_binarization=dynamic_binarization,
        seed=seed,
    )


# Options that make sense for a pre-split .npz (no test_fraction: the file fixes the test set).
_NPZ_SPLIT_OPTIONS = set(
    ["name", "likelihood", "image_shape", "seed", "dynamic_binarization", "valid_fraction"]
)


def _from_splits(name: str, a: Mapping[str, np.ndarray], kwargs: dict[str, Any]) -> Dataset:
    """An ``.npz`` holding x_train / x_test (optional x_valid, y_*): keep its split."""
    unknown = set(kwargs) - _NPZ_SPLIT_OPTIONS
    if unknown:
        raise ConfigError(
            f"load_file: unexpected option(s) {sorted(unknown)} for a pre-split .npz."
        )
    seed = check_seed(kwargs.get("seed", 0))
    dynamic = bool(kwargs.get("dynamic_binarization", False))
    xs, shapes = {}, set()
    for s in ("train", "valid", "test"):
        if f"x_{s}" in a:
            xs[s], shape = _flatten(
                _to_numpy(a[f"x_{s}"], f"{name} x_{s}"), kwargs.get("image_shape"), name
            )
            shapes.add(shape)
    ys = {s: a.get(f"y_{s}") for s in ("train", "valid", "test")}
    if "valid" not in xs:  # hold out a seeded random fraction of train, like from_array
        n = len(xs["train"])
        n_valid = round(_fraction(kwargs.get("valid_fraction", 0.1), "valid_fraction") * n)
        order = permutation(n, seed)
        tr, va = order[: n - n_valid], order[n - n_valid :]
        xs["train"], xs["valid"] = xs["train"][tr], xs["train"][va]
        if ys["train"] is not None:
            ys["train"], ys["valid"] = ys["train"][tr], ys["train"][va]
    if len(shapes) != 1:
        raise DataError(f"{name}: the splits have different image shapes {sorted(shapes)}.")
    lik = _likelihood(list(xs.values()), kwargs.get("likelihood"), dynamic)
    return assemble(
        kwargs.get("name", name),
        xs,
        labels=ys,
        image_shape=shapes.pop(),
        likelihood=lik,
        dynamic_binarization=dynamic,
        seed=seed,
    )


def load_file(path: str | os.PathLike, **kwargs: Any) -> Dataset:
    """A :class:`Dataset` from a ``.npy`` or ``.npz`` file (loaded without pickle).

    ``.npy``: one array, split like :func:`from_array` (``kwargs`` are its options). ``.npz``:
    either a single array (same as ``.npy``), or ``x_train`` and ``x_test`` with optional
    ``x_valid`` (else ``valid_fraction`` of train is held out) and ``y_train`` / ``y_valid`` /
    ``y_test`` labels.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"Data file {path} not found (resolved: {path.resolve()}).")
    kwargs.setdefault("name", path.stem)
    if path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read {path}: {exc}") from None
        return from_array(x, **kwargs)
    if path.suffix != ".npz":
        raise ConfigError(f"load_file reads .npy and .npz files, got {path.name!r}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from None
    if len(files) == 1:
        return from_array(read_npz(path, files)[files[0]], **kwargs)
    if "x_train" not in files or "x_test" not in files:
        raise DataError(
            f"{path}: a multi-array .npz needs 'x_train' and 'x_test' (optional 'x_valid', "
            f"'y_train', 'y_valid', 'y_test'); it holds {files}."
        )
    wanted = [
        k for k in files if k in {"x_train", "x_valid", "x_test", "y_train", "y_valid", "y_test"}
    ]
    return _from_splits(kwargs["name"], read_npz(path, wanted), kwargs)
