"""Validation of data matrices before they reach a model.

Bad data (NaN, a wrong shape, grey levels fed to a Bernoulli decoder) otherwise surfaces as an
obscure error deep inside torch or Pyro (``Expected value argument ... to be within the support``)
or, worse, as a silently wrong ELBO. These checks run once at load time and raise a
:class:`~ppvae.errors.DataError` that says what is wrong, where, and what to do about it.
"""

from __future__ import annotations

import difflib

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
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: cannot be read as a numeric array ({exc}).") from None


def _first(mask: torch.Tensor) -> str:
    """'row i, column j' of the first True entry of a 2-D mask (row-major order)."""
    row, col = (int(v) for v in mask.nonzero()[0])
    return f"row {row}, column {col}"


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
    """
    check_likelihood(likelihood)
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
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_complex():
        raise DataError(f"{what}: has complex dtype {x.dtype}; expected real numbers.")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(bad.sum()) - n_nan
            raise DataError(
                f"{what}: {n_nan} NaN and {n_inf} infinite values (of {x.numel()}), first at "
                f"{_first(bad)}. Remove or impute them before training."
            )
    if likelihood != "bernoulli":
        return
    lo, hi = float(x.min()), float(x.max())
    if dynamic_binarization:
        outside = (x < 0) | (x > 1)
        if bool(outside.any()):
            raise DataError(
                f"{what}: dynamic binarization needs grey levels in [0, 1] (Bernoulli "
                f"probabilities), found min={lo:g}, max={hi:g}; {int(outside.sum())} values "
                f"outside, first at {_first(outside)}. Rescale the data (e.g. divide 8-bit "
                f"images by 255) or use likelihood='normal'."
            )
        return
    not_binary = (x != 0) & (x != 1)
    if bool(not_binary.any()):
        raise DataError(
            f"{what}: a Bernoulli likelihood needs values in {{0, 1}}, found min={lo:g}, "
            f"max={hi:g}; {int(not_binary.sum())} values are neither 0 nor 1, first at "
            f"{_first(not_binary)}. For grey levels in [0, 1] use dynamic binarization "
            f"(dynamic_binarization=True); for other continuous data use likelihood='normal'."
        )
