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
from .checks import DataScan, check_data, check_likelihood, check_support, scan_data
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


def _likelihood(
    scans: list[DataScan], likelihood: str | None, dynamic: bool, name: str = "data"
) -> str:
    """Infer the likelihood: {0,1} data -> bernoulli; grey levels -> bernoulli only when dynamic
    binarization is asked for; integers above 1 (8-bit images, counts) -> an error asking what
    they are; anything else -> normal. An explicit ``likelihood`` is taken as given."""
    if likelihood is not None:
        check_likelihood(likelihood)
        if dynamic and likelihood != "bernoulli":
            raise ConfigError(
                f"dynamic_binarization=True needs likelihood='bernoulli', got {likelihood!r}."
            )
        return likelihood
    if dynamic:  # check_support then reports grey levels outside [0, 1] explicitly
        return "bernoulli"
    if all(s.binary for s in scans):
        return "bernoulli"
    _refuse_integers(scans, name)
    return "normal"


def _refuse_integers(scans: list[DataScan], name: str) -> None:
    """Integer data with values above 1 is almost always 8-bit images: a Gaussian decoder on 0-255
    values trains "fine" with a loss in the millions. Say so instead of guessing."""
    lo, hi = min(s.min for s in scans), max(s.max for s in scans)
    if hi <= 1:
        return
    if all(s.integer_dtype for s in scans):
        dtypes = sorted({str(s.x.dtype).replace("torch.", "") for s in scans})
        kind = f"integer dtype {'/'.join(dtypes)}"
    elif lo >= 0 and hi <= 255 and all(s.integral for s in scans):
        kind = "float dtype, but every value is a whole number"
    else:
        return
    if lo >= 0 and hi <= 255:
        looks = "looks like 8-bit images (grey levels 0-255)"
        scale = "Scale it to [0, 1] (x / 255)"
    else:
        looks = "looks like integer-coded data (counts, codes), not continuous values"
        scale = f"Rescale it to [0, 1] (e.g. (x - {lo:g}) / {hi - lo:g})"
    raise DataError(
        f"{name}: holds only integers from {lo:g} to {hi:g} ({kind}): this {looks}. A Gaussian "
        f"decoder would model these values as they are (losses in the millions), so ppvae does "
        f"not guess. {scale} for a Bernoulli decoder with dynamic binarization "
        f"(dynamic_binarization=True), binarize it (e.g. x > 127 for 8-bit images), or pass "
        f"likelihood='normal' explicitly if it is really continuous data."
    )


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
    probabilities (valid and test are then binarized once with ``seed``). Integer data with
    values above 1 (an integer dtype, or floats that are all whole numbers in 0..255: 8-bit
    images, most likely) raises :class:`DataError` instead of being modelled as Gaussian: scale
    it to [0, 1], binarize it, or pass ``likelihood="normal"`` explicitly.

    The values are checked in one vectorized pass over the whole array (min/max and finiteness
    in one reduction, plus a chunked {0, 1} test when needed), not once per split.
    """
    arr, shape = _flatten(_to_numpy(x, name), image_shape, name)
    scan = scan_data(arr, what=name)  # shape, emptiness and NaN/inf before inferring anything
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
    lik = _likelihood([scan], likelihood, dynamic_binarization, name)
    # Checked once on the whole array, from the same scan: every split is a subset of it.
    check_support(scan, lik, dynamic_binarization=dynamic_binarization)
    return assemble(
        name,
        {s: arr[i] for s, i in cuts.items()},  # fancy indexing: private copies
        labels={s: None if y is None else y[i] for s, i in cuts.items()},
        image_shape=shape,
        likelihood=lik,
        dynamic_binarization=dynamic_binarization,
        seed=seed,
        checked=True,
        owned=True,
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
    xs, shapes, scans = {}, set(), {}
    for s in ("train", "valid", "test"):
        if f"x_{s}" in a:
            xs[s], shape = _flatten(
                _to_numpy(a[f"x_{s}"], f"{name} x_{s}"), kwargs.get("image_shape"), name
            )
            shapes.add(shape)
            if len(xs[s]) or s == "train":  # an empty x_valid / x_test is allowed
                scans[s] = scan_data(xs[s], what=f"{name} x_{s}")
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
    lik = _likelihood(list(scans.values()), kwargs.get("likelihood"), dynamic, name)
    for scan in scans.values():  # x_train's scan covers the train and valid parts cut from it
        check_support(scan, lik, dynamic_binarization=dynamic)
    return assemble(
        kwargs.get("name", name),
        xs,
        labels=ys,
        image_shape=shapes.pop(),
        likelihood=lik,
        dynamic_binarization=dynamic,
        seed=seed,
        checked=True,
        owned=True,  # read from the file here (or cut from it by fancy indexing): private
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
