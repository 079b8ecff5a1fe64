"""Raw arrays -> a checked :class:`Dataset`: seeded splits, truncation, fixed binarization.

All randomness here uses NumPy generators seeded from ``(seed, stream)``. NumPy fills arrays
sequentially from its bit stream, so the first ``n`` rows of a draw do not depend on how many rows
were drawn: ``limit=n`` gives exactly the first ``n`` rows of the full dataset, binarization
included, which keeps fast CI runs consistent with full runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ppvae.errors import ConfigError, DataError

from .checks import check_data
from .dataset import SPLITS, Dataset

# Independent random streams per purpose, so changing e.g. the validation size does not change
# the test binarization.
SPLIT_STREAM, VALID_STREAM, TEST_STREAM = 0, 1, 2
_BIN_STREAM = {"valid": VALID_STREAM, "test": TEST_STREAM}


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}.")
    return int(limit)


def check_valid_size(valid_size: int, available: int, name: str) -> int:
    """``valid_size`` must leave at least one training point."""
    if isinstance(valid_size, bool) or not isinstance(valid_size, (int, np.integer)):
        raise ConfigError(f"{name}: valid_size must be an integer, got {valid_size!r}.")
    if not 0 <= valid_size < available:
        raise ConfigError(
            f"{name}: valid_size={valid_size} must be in [0, {available - 1}] "
            f"({available} points are available for train + valid)."
        )
    return int(valid_size)


def rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([check_seed(seed), stream])


def permutation(n: int, seed: int) -> np.ndarray:
    """The seeded shuffle used for random splits (VampPrior-style shuffle-then-slice)."""
    return rng(seed, SPLIT_STREAM).permutation(n)


def binarize_once(p: torch.Tensor, seed: int, stream: int) -> torch.Tensor:
    """One fixed Bernoulli draw of the grey levels ``p``, reproducible from ``(seed, stream)``."""
    u = rng(seed, stream).random(tuple(p.shape), dtype=np.float32)
    # u lies in [0, 1): p == 0 always gives 0 and p == 1 always gives 1.
    return (torch.from_numpy(u) < p).to(torch.float32)


def to_float(x: np.ndarray | torch.Tensor, scale: float = 1.0, copy: bool = True) -> torch.Tensor:
    """(N, ...) array -> (N, D) float32 tensor divided by ``scale``, with one copy at most.

    ``copy=False`` says ``x`` is a private array (e.g. the result of fancy indexing) that may be
    wrapped and scaled in place: a contiguous float32 array is then not copied at all.
    """
    dim = math.prod(x.shape[1:])  # explicit, as reshape(0, -1) is ambiguous for an empty split
    if isinstance(x, torch.Tensor):
        out = x.detach().cpu().reshape(x.shape[0], dim).to(torch.float32, copy=copy)
        if not copy and not out.is_contiguous():
            out = out.contiguous()
    elif copy or not x.flags.writeable:
        # via NumPy: read-only buffers (np.frombuffer) cannot be wrapped by torch.from_numpy
        out = torch.from_numpy(np.array(x, dtype=np.float32).reshape(len(x), dim))
    else:
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), dim)
        out = torch.from_numpy(flat)
    if scale != 1.0:
        out.div_(scale)
    return out


def to_labels(y: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    if y is None:
        return None
    t = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y).reshape(-1).copy())
    return t.detach().cpu().reshape(-1).to(torch.int64)


def assemble(
    name: str,
    splits: Mapping[str, np.ndarray | torch.Tensor],
    *,
    image_shape: tuple[int, int],
    likelihood: str,
    dynamic_binarization: bool,
    labels: Mapping[str, np.ndarray | torch.Tensor | None] | None = None,
    scale: float = 1.0,
    seed: int = 0,
    limit: int | None = None,
    checked: bool = False,
    owned: bool = False,
) -> Dataset:
    """Build a checked :class:`Dataset` from raw split arrays.

    Each split is truncated to its first ``limit`` rows *before* conversion (cheap), converted to
    float32 and divided by ``scale``, checked against the likelihood, and - when
    ``dynamic_binarization`` - valid and test are binarized once with ``seed``.

    ``checked=True`` says the caller has already run the value checks on arrays that contain
    every split (as ``from_array`` does, from one scan): only the cheap structural ones are
    repeated. ``owned=True`` says the split arrays are private copies, converted in place when
    their dtype allows it (no second copy).
    """
    limit = check_limit(limit)
    labels = labels or {}
    fields: dict[str, torch.Tensor | None] = {}
    for split in SPLITS:
        x, y = splits[split], labels.get(split)
        if limit is not None:
            x = x[:limit]
            y = None if y is None else y[:limit]
        t = to_float(x, scale, copy=not owned)
        if checked:  # the values were checked on the whole array; the structure is cheap to redo
            if split == "train" and t.shape[0] == 0:
                raise DataError(
                    f"{name} train split: is empty (shape {tuple(t.shape)}); need at least one "
                    f"data point."
                )
        elif t.shape[0] > 0 or split == "train":  # an empty valid split is allowed (valid_size=0)
            check_data(
                t,
                likelihood,
                what=f"{name} {split} split",
                dynamic_binarization=dynamic_binarization,
            )
        if dynamic_binarization and split != "train":
            fields[f"{split}_grey"] = t  # kept for classifiers (Dataset.grey_levels)
            t = binarize_once(t, seed, _BIN_STREAM[split])
        fields[split] = t
        fields[f"{split}_labels"] = to_labels(y)
    return Dataset(
        name=name,
        image_shape=image_shape,
        likelihood=likelihood,
        dynamic_binarization=dynamic_binarization,
        **fields,  # type: ignore[arg-type]
    )


def hold_out(
    x: np.ndarray, y: np.ndarray | None, valid_size: int, order: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    """Split ``x`` into train and the last ``valid_size`` rows (of ``x[order]`` if given)."""
    if order is not None:
        x = x[order]
        y = None if y is None else y[order]
    cut = len(x) - valid_size
    xs = {"train": x[:cut], "valid": x[cut:]}
    ys = {"train": None if y is None else y[:cut], "valid": None if y is None else y[cut:]}
    return xs, ys
