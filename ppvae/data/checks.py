"""Validation of data matrices before they reach a model.

Bad data (NaN, a wrong shape, grey levels fed to a Bernoulli decoder) otherwise surfaces as an
obscure error deep inside torch or Pyro (``Expected value argument ... to be within the support``)
or, worse, as a silently wrong ELBO. These checks run once at load time and raise a
:class:`~ppvae.errors.DataError` that says what is wrong, where, and what to do about it.
"""

from __future__ import annotations

import difflib
import math
import warnings

import numpy as np
import torch

from ppvae.errors import ConfigError, DataError

LIKELIHOODS = ("bernoulli", "normal")


def check_likelihood(likelihood: str) -> str:
    """Return ``likelihood`` if known, else raise :class:`ConfigError` listing the known ones."""
    if likelihood in LIKELIHOODS:
        return likelihood
    close = difflib.get_close_matches(str(likelihood), LIKELIHOODS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"Unknown likelihood {likelihood!r}; known likelihoods: {', '.join(LIKELIHOODS)}.{hint}"
    )


def _as_tensor(x: object, what: str) -> torch.Tensor:
    """``x`` as a tensor without copying where possible (NumPy arrays are shared, not copied)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        arr = np.asarray(x)
        if arr.dtype == object:
            raise TypeError(f"dtype {arr.dtype}")
        with warnings.catch_warnings():  # a read-only buffer: it is only read here
            warnings.simplefilter("ignore", UserWarning)
            return torch.as_tensor(arr)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: cannot be read as a numeric array ({exc}).") from None


def _first(mask: torch.Tensor) -> str:
    """'row i, column j' of the first True entry of a 2-D mask (row-major order)."""
    row, col = (int(v) for v in mask.nonzero()[0])
    return f"row {row}, column {col}"


# Rows of a float matrix scanned at a time by the integer test: ~1 MB of float32, which stays in
# cache and lets the scan stop at the first chunk with a fraction (grey levels: after one chunk).
_CHUNK_VALUES = 1 << 18

# torch has no CPU min/max for these: their values are widened to int64 (rare dtypes, exact).
_WIDEN = (torch.uint16, torch.uint32, torch.uint64)


class DataScan:
    """What one cheap pass over an ``(N, D)`` matrix tells: finiteness, min and max, and - only
    when asked, and lazily - whether every value is an integer.

    ``min`` and ``max`` come from one vectorized ``torch.aminmax`` with no temporary copy; NaN
    propagates through it and +-inf shows in it, so the matrix is finite exactly when both are.
    The integer test runs over row chunks and stops at the first fraction. Masks that locate the
    first bad value are computed only to word an error message. Build it with :func:`scan_data`.
    """

    def __init__(self, x: torch.Tensor, what: str):
        self.x, self.what = x, what
        if x.dtype == torch.bool:
            x = x.view(torch.uint8)
        elif x.dtype in _WIDEN:
            x = x.to(torch.int64)
        self._values = x
        self.integer_dtype = not x.is_floating_point()
        lo, hi = torch.aminmax(x)
        self.min, self.max = lo.item(), hi.item()
        self.finite = self.integer_dtype or (math.isfinite(self.min) and math.isfinite(self.max))
        self._integral: bool | None = True if self.integer_dtype else None

    @property
    def integral(self) -> bool:
        """Every value is an integer (for float data: a finite value with no fraction)."""
        if self._integral is None:
            x = self._values
            if not self.finite:
                self._integral = False
            else:
                rows = max(1, _CHUNK_VALUES // max(1, x.shape[1]))
                self._integral = not any(
                    bool(torch.frac(x[i : i + rows]).any()) for i in range(0, x.shape[0], rows)
                )
        return self._integral

    @property
    def binary(self) -> bool:
        """Every value is 0 or 1."""
        return self.min >= 0 and self.max <= 1 and self.integral

    def mask(self, kind: str) -> torch.Tensor:
        """Boolean mask of the offending values (error messages only: allocates)."""
        x = self._values
        if kind == "not_finite":
            return ~torch.isfinite(x)
        if kind == "outside_unit":
            return (x < 0) | (x > 1)
        if kind == "not_binary":
            return (x != 0) & (x != 1)
        raise ValueError(kind)

    def raise_if_not_finite(self) -> None:
        if self.finite:
            return
        bad = self.mask("not_finite")
        n_nan = int(torch.isnan(self._values).sum())
        n_inf = int(bad.sum()) - n_nan
        raise DataError(
            f"{self.what}: {n_nan} NaN and {n_inf} infinite values (of {self.x.numel()}), first "
            f"at {_first(bad)}. Remove or impute them before training."
        )


def scan_data(x: object, *, x_dim: int | None = None, what: str = "data") -> DataScan:
    """Check the structure of ``x`` (a 2-D, non-empty, real ``(N, D)`` matrix, ``D == x_dim`` if
    given) and that its values are finite; return the :class:`DataScan` (min, max, integer test)
    that the likelihood checks and the likelihood inference then read without another pass."""
    x = _as_tensor(x, what)
    if x.dim() != 2:
        expected = f"(N, {x_dim})" if x_dim is not None else "(N, D)"
        hint = (
            " Flatten images first (from_array and load_file accept (N, H, W) and flatten them)."
            if x.dim() in (3, 4)
            else ""
        )
        raise DataError(
            f"{what}: expected a 2-D array of shape {expected}, got shape {tuple(x.shape)} "
            f"({x.dim()}-D).{hint}"
        )
    if x_dim is not None and x.shape[1] != x_dim:
        raise DataError(
            f"{what}: expected shape (N, {x_dim}) to match the model's x_dim={x_dim}, "
            f"got shape {tuple(x.shape)}."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{what}: is empty (shape {tuple(x.shape)}); need at least one data point.")
    if x.is_complex():
        raise DataError(f"{what}: has complex dtype {x.dtype}; expected real numbers.")
    scan = DataScan(x, what)
    scan.raise_if_not_finite()
    return scan


def check_support(scan: DataScan, likelihood: str, *, dynamic_binarization: bool = False) -> None:
    """Raise :class:`DataError` unless the scanned values lie in the support of ``likelihood``
    (see :func:`check_data`); reads ``scan``, and passes over the data only for a Bernoulli
    likelihood on float data without dynamic binarization (the {0, 1} test)."""
    check_likelihood(likelihood)
    if likelihood != "bernoulli":
        return
    what, lo, hi = scan.what, scan.min, scan.max
    if dynamic_binarization:
        if lo < 0 or hi > 1:
            outside = scan.mask("outside_unit")
            raise DataError(
                f"{what}: dynamic binarization needs grey levels in [0, 1] (Bernoulli "
                f"probabilities), found min={lo:g}, max={hi:g}; {int(outside.sum())} values "
                f"outside, first at {_first(outside)}. Rescale the data (e.g. divide 8-bit "
                f"images by 255) or use likelihood='normal'."
            )
        return
    if not scan.binary:
        not_binary = scan.mask("not_binary")
        raise DataError(
            f"{what}: a Bernoulli likelihood needs values in {{0, 1}}, found min={lo:g}, "
            f"max={hi:g}; {int(not_binary.sum())} values are neither 0 nor 1, first at "
            f"{_first(not_binary)}. For grey levels in [0, 1] use dynamic binarization "
            f"(dynamic_binarization=True); for other continuous data use likelihood='normal'."
        )


def check_data(
    x: torch.Tensor,
    likelihood: str,
    *,
    x_dim: int | None = None,
    what: str = "data",
    dynamic_binarization: bool = False,
) -> None:
    """Raise :class:`DataError` unless ``x`` is a valid ``(N, D)`` data matrix for ``likelihood``.

    Checks, in order: 2-D shape (and ``D == x_dim`` if given), non-empty, all values finite, and
    the likelihood's support: ``"bernoulli"`` needs values in {0, 1}, or grey levels in [0, 1]
    when ``dynamic_binarization`` is true (each training batch is then a fresh Bernoulli draw,
    Salakhutdinov & Murray, ICML 2008); ``"normal"`` takes any finite value.

    ``dynamic_binarization`` is an addition to the documented signature: without it the function
    could not tell legitimate grey levels from a mistake.

    Cost: one vectorized min/max reduction (no copy of the data), plus for a Bernoulli likelihood
    on float data a chunked {0, 1} test; the masks that locate a bad value are built only when
    there is an error to report.
    """
    check_likelihood(likelihood)
    scan = scan_data(x, x_dim=x_dim, what=what)
    check_support(scan, likelihood, dynamic_binarization=dynamic_binarization)
