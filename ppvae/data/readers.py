"""Locating dataset files and reading the on-disk formats (IDX, ``.amat`` text, MATLAB v5).

The readers are plain NumPy so that loading never needs torchvision (which is used only for
downloading). Corrupt files raise :class:`DataError` naming the file, not a NumPy stack trace.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ppvae.errors import DataError, DataNotFoundError


def find_file(
    root: Path,
    root_source: str,
    candidates: Sequence[str],
    *,
    dataset: str,
    how_to_get: str,
) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that exists.

    Otherwise raise :class:`DataNotFoundError` naming the file, the root and where that root came
    from (argument / ``$PPVAE_DATA`` / default), and ``how_to_get`` it.
    """
    for rel in candidates:
        path = root / rel
        if path.is_file():
            return path
    tried = ", ".join(str(root / rel) for rel in candidates)
    hint = ""
    # A common slip is to pass the dataset's own folder (".../MNIST") instead of the data root.
    for parent in list(root.parents)[:2]:
        if any((parent / rel).is_file() for rel in candidates):
            hint = f" Note: it exists under {parent}; pass that folder as the root."
            break
    raise DataNotFoundError(
        f"{dataset}: file {candidates[0]!r} not found under the data root {root} "
        f"({root_source}). Looked for: {tried}.{hint} To get it: {how_to_get} Or set PPVAE_DATA "
        f"/ pass root= to a folder that holds {candidates[0]}."
    )


def _open(path: Path) -> BinaryIO:
    """Open plain or gzip-compressed files alike (decided by the gzip magic, not the suffix)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read(path: Path, n_bytes: int = -1) -> bytes:
    try:
        with _open(path) as f:
            return f.read(n_bytes)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"Cannot read {path}: {exc}. The file looks corrupt; fetch it again."
        ) from None


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, max_rows: int | None = None) -> np.ndarray:
    """Read an IDX file (LeCun et al. 1998, MNIST format), gzipped or not.

    The header is 2 zero bytes, a dtype code, the number of dimensions, then one big-endian int32
    per dimension (16 bytes for images, 8 for labels). Reading only the header plus ``max_rows``
    rows makes ``limit=`` loads fast.
    """
    head = _read(path, 4)
    if len(head) != 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {head.hex()}).")
    dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
    header_len = 4 + 4 * ndim
    with _open(path) as f:
        header = f.read(header_len)
        dims = [int(d) for d in np.frombuffer(header[4:], ">i4")]
        rows = dims[0] if max_rows is None else min(dims[0], max_rows)
        row_len = int(np.prod(dims[1:], dtype=np.int64)) * dtype.itemsize
        try:
            body = f.read(rows * row_len)
        except (OSError, EOFError) as exc:
            raise DataError(f"Cannot read {path}: {exc}. The file looks corrupt.") from None
    if len(body) != rows * row_len:
        raise DataError(
            f"{path} is truncated: header says shape {tuple(dims)}, "
            f"found {len(body)} of {rows * row_len} data bytes."
        )
    return np.frombuffer(body, dtype).reshape(rows, *dims[1:])


def read_amat(path: Path, width: int = 784, max_rows: int | None = None) -> np.ndarray:
    """Read a binary ``.amat`` text file (one image per line of space-separated 0/1 digits).

    This is the format of the fixed binarization of MNIST (Larochelle & Murray, AISTATS 2011).
    ``np.loadtxt`` takes seconds on 50,000 rows; as every value is a single ASCII digit followed by
    one separator, the digits sit at the even byte offsets, which decodes in milliseconds. Files
    that do not have this exact layout fall back to ``np.loadtxt``.
    """
    line = 2 * width  # width digits + (width - 1) spaces + "\n"
    raw = _read(path, -1 if max_rows is None else max_rows * line)
    buf = np.frombuffer(raw, np.uint8)
    if buf.size and buf.size % line == 0:
        grid = buf.reshape(-1, line)
        seps, digits = grid[:, 1::2], grid[:, 0::2] - 48
        if (seps[:, :-1] == 32).all() and (seps[:, -1] == 10).all() and (digits <= 1).all():
            return digits
    try:
        with _open(path) as f:
            values = np.loadtxt(f, dtype=np.float32, max_rows=max_rows, ndmin=2)
    except ValueError as exc:
        raise DataError(f"Cannot parse {path} as whitespace-separated numbers: {exc}") from None
    if values.shape[1] != width:
        raise DataError(f"{path}: expected {width} values per line, found {values.shape[1]}.")
    return values


def read_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read variables ``keys`` from a MATLAB v5 file; :class:`DataError` if one is missing."""
    import scipy.io  # deferred: scipy is only needed for the .mat datasets

    try:
        mat = scipy.io.loadmat(path, variable_names=list(keys))
    except Exception as exc:  # scipy raises a zoo of types on corrupt files
        raise DataError(f"Cannot read MATLAB file {path}: {exc}") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(f"{path} lacks the variable(s) {missing}; is it the right file?")
    return {k: mat[k] for k in keys}


def read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read arrays ``keys`` from an ``.npz`` without enabling pickle (safe on untrusted files)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
            arrays = {k: npz[k] for k in keys if k in files}
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks the array(s) {missing}; it holds {files}.")
    return arrays
