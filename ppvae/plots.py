"""Figures for generative autoencoders: image grids, reconstructions, the 2-D latent manifold,
latent scatter plots, training curves and the per-input posterior codes of the toy experiment.

Every function takes tensors (on any device), writes one PNG to ``path`` (creating parent
folders; the file is PNG whatever its suffix) and returns the :class:`pathlib.Path` written.
Nothing here touches pyplot or a display: figures are :class:`matplotlib.figure.Figure` objects
rendered by the Agg canvas, and image grids are built with :func:`torchvision.utils.make_grid`.
Images arrive flattened, ``(N, H*W)``, with ``image_shape=(H, W)``; values are clamped to [0, 1].
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torchvision.utils import make_grid, save_image

from ppvae.errors import ConfigError, DataError

__all__ = [
    "manifold_grid",
    "project_2d",
    "save_codes_against_priors",
    "save_codes_by_input",
    "save_image_grid",
    "save_latent_scatter",
    "save_manifold",
    "save_reconstructions",
    "save_style_content_grid",
    "save_training_curves",
]

_SKIP_KEYS = frozenset({"epoch", "time", "epoch_seconds", "cpu_seconds", "step"})
_LOSS_WORDS = frozenset({"loss", "elbo", "nll", "ll", "kl", "rec", "recon", "iwae", "bound", "lml", "nelbo"})


def _out(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: Figure, path) -> Path:
    """Write a matplotlib ``Figure`` as PNG at its own dpi, creating the folder."""
    path = _out(path)
    fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight")
    return path


def _as_images(images: torch.Tensor, image_shape, what: str = "images") -> torch.Tensor:
    """(N, H*W), (N, H, W) or (N, 1, H, W) -> float (N, 1, H, W) on the CPU, in [0, 1]."""
    h, w = (int(s) for s in image_shape)
    images = torch.as_tensor(images).detach().cpu()
    if images.dim() < 2 or images.shape[0] == 0 or images[0].numel() != h * w:
        raise DataError(
            f"{what} must have shape (N, {h * w}) or (N, {h}, {w}) for image_shape={(h, w)}, "
            f"got {tuple(images.shape)}"
        )
    images = images.reshape(-1, 1, h, w).float()
    return torch.nan_to_num(images, nan=0.0).clamp(0.0, 1.0)


def _grid(tiles: torch.Tensor, nrow: int, padding: int, upscale: int) -> torch.Tensor:
    """Tile (N, 1, H, W) images into a (3, rows, cols) grid; ``padding`` is in output pixels."""
    if upscale < 1 or padding < 0 or nrow < 1:
        raise ConfigError(f"need upscale >= 1, padding >= 0, nrow >= 1; got {upscale}, {padding}, {nrow}")
    if upscale > 1:
        tiles = F.interpolate(tiles, scale_factor=upscale, mode="nearest")
    if tiles.shape[0] == 1:  # make_grid returns a lone image without its border: add it here
        return F.pad(tiles[0], (padding,) * 4).expand(3, -1, -1).contiguous()
    return make_grid(tiles, nrow=nrow, padding=padding, pad_value=0.0)


def save_image_grid(images: torch.Tensor, image_shape: tuple[int, int], path, *,
                    nrow: int | None = None, padding: int = 2, upscale: int = 1) -> Path:
    """Write the images as one grid, ``nrow`` tiles per row (default ``ceil(sqrt(N))``).

    Each tile is enlarged ``upscale`` times by nearest-neighbour (so 8x8 digits stay readable),
    then tiles are separated and framed by ``padding`` black pixels. With ``c = min(nrow, N)``
    columns and ``r = ceil(N / c)`` rows the PNG is ``r*(H*upscale+padding)+padding`` pixels high
    and ``c*(W*upscale+padding)+padding`` wide; tile ``i`` sits at row ``i // c``, column ``i % c``.
    """
    tiles = _as_images(images, image_shape)
    nrow = math.ceil(math.sqrt(tiles.shape[0])) if nrow is None else int(nrow)
    path = _out(path)
    save_image(_grid(tiles, nrow, padding, upscale), path, format="png")
    return path


def save_reconstructions(x: torch.Tensor, x_rec: torch.Tensor | Mapping[str, torch.Tensor], image_shape, path, *,
                         n: int = 16, upscale: int = 1, ncol: int | None = None, padding: int = 2,
                         labels: tuple[str, str] = ("original", "reconstruction")) -> Path:
    """Write the first ``n`` inputs above their reconstructions, each row named.

    The items are cut into rows of ``ncol`` (default ``min(n, 8)``); each row of originals is
    followed directly by the row of their reconstructions, so the tile under an original is its
    reconstruction. A short last row is completed with black tiles. A white column on the left
    names every row (``labels``: originals, reconstructions); the grid itself sits flush right,
    ``2 * ceil(n / ncol) * (H*upscale + padding) + padding`` pixels high and
    ``ncol * (W*upscale + padding) + padding`` wide, as :func:`save_image_grid` lays it out.
    ``x_rec`` may also map names to reconstructions (several models of the same inputs): each
    block of originals is then followed by one row per model, named by its key.
    """
    named = list(x_rec.items()) if isinstance(x_rec, Mapping) else [(labels[1], x_rec)]
    if not named:
        raise DataError("save_reconstructions needs at least one set of reconstructions")
    x = _as_images(x, image_shape, "x")
    recs = [(name, _as_images(r, image_shape, f"x_rec[{name!r}]" if isinstance(x_rec, Mapping) else "x_rec"))
            for name, r in named]
    k = min(int(n), x.shape[0], *(r.shape[0] for _, r in recs))
    if k < 1:
        raise DataError("save_reconstructions needs at least one item (n >= 1 and non-empty x)")
    ncol = min(k, 8) if ncol is None else int(ncol)
    chunks = math.ceil(k / ncol)
    blank = torch.zeros(chunks * ncol - k, *x.shape[1:])
    rows = [torch.cat([t[:k], blank]).reshape(chunks, 1, ncol, *x.shape[1:]) for t in [x] + [r for _, r in recs]]
    tiles = torch.cat(rows, dim=1).reshape(-1, *x.shape[1:])
    grid = _grid(tiles, ncol, padding, upscale)
    row_h = x.shape[-2] * upscale + padding
    names = [labels[0]] + [name for name, _ in recs]
    path = _out(path)
    _with_row_labels(grid, names * chunks, row_h, padding).save(path, format="png")
    return path


def _font(height: int):
    """A font whose letters fit a row ``height`` pixels high (Pillow's bundled one)."""
    from PIL import ImageFont

    size = max(6, min(14, int(0.7 * height)))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _with_row_labels(grid: torch.Tensor, labels: Sequence[str], row_h: int, padding: int):
    """The (3, H, W) grid as a PIL image with a white column on its left holding one label per
    row of tiles, vertically centred on its row; the grid's pixels are unchanged."""
    from PIL import Image, ImageDraw

    arr = (grid.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    font = _font(row_h - padding)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(probe.textbbox((0, 0), t, font=font)[2] for t in labels) + 8
    out = Image.new("RGB", (width + arr.shape[1], arr.shape[0]), (255, 255, 255))
    out.paste(Image.fromarray(arr), (width, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(labels):
        y0 = padding + r * row_h
        box = draw.textbbox((0, 0), text, font=font)
        y = y0 + (row_h - padding - (box[3] - box[1])) / 2 - box[1]
        draw.text((width - 4 - (box[2] - box[0]), y), text, fill=(0, 0, 0), font=font)
    return out


def manifold_grid(n: int) -> torch.Tensor:
    """The ``(n*n, 2)`` latent points of :func:`save_manifold`, in tile order (row-major, top row
    first): ``z[r*n + c] = (Phi^-1(p[c]), Phi^-1(p[n-1-r]))`` with ``p = (0.5, 1.5, ...)/n``."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    q = torch.distributions.Normal(0.0, 1.0).icdf(p)
    z1 = q.repeat(n)  # varies along columns
    z2 = q.flip(0).repeat_interleave(n)  # varies along rows, largest at the top
    return torch.stack([z1, z2], dim=1).float()


#: the colour between the manifold's tiles: neither black (MNIST's background) nor grey (Frey Face's)
GAP_COLOR = (0.30, 0.55, 0.85)


@torch.no_grad()
def save_manifold(decode: Callable[[torch.Tensor], torch.Tensor], image_shape, path, *,
                  n: int = 20, upscale: int = 1, device="cpu", padding: int = 2,
                  gap_color: tuple[float, float, float] = GAP_COLOR) -> Path:
    """Write the learned 2-D data manifold, as in Kingma & Welling (2014), "Auto-Encoding
    Variational Bayes", Fig. 4.

    An ``n x n`` grid of probabilities linearly spaced inside (0, 1), ``(i + 0.5) / n``, is mapped
    through the inverse CDF of the standard normal, so that equal steps cover equal prior mass,
    and decoded in one call ``decode(z)`` with ``z`` of shape ``(n*n, 2)`` on ``device``; the
    decoder must return the means, ``(n*n, H*W)``. ``z1`` increases left to right along the
    columns and ``z2`` increases upwards along the rows (see :func:`manifold_grid`). Tiles are
    separated by ``padding`` pixels of ``gap_color`` (an RGB triple in [0, 1]), so that images with
    black or grey backgrounds do not run together; the PNG is ``n*(H*upscale+padding)+padding``
    pixels square.
    """
    z = manifold_grid(int(n)).to(device)
    means = decode(z)
    h, w = (int(s) for s in image_shape)
    if (not isinstance(means, torch.Tensor) or means.dim() < 2 or means.shape[0] != n * n
            or means[0].numel() != h * w):
        shape = tuple(means.shape) if isinstance(means, torch.Tensor) else type(means).__name__
        raise DataError(
            f"save_manifold: decode(z) with z of shape ({n * n}, 2) must return means of shape "
            f"({n * n}, {h * w}) for image_shape={(h, w)}, got {shape}"
        )
    tiles = _as_images(means, (h, w))
    grid = _grid(tiles, int(n), padding, upscale)
    if padding > 0:  # colour the gaps: where a grid of all-ones tiles is 0
        gaps = _grid(torch.ones_like(tiles), int(n), padding, upscale)[0] == 0
        grid[:, gaps] = torch.tensor(gap_color, dtype=grid.dtype)[:, None]
    path = _out(path)
    save_image(grid, path, format="png")
    return path


def project_2d(z: torch.Tensor, *, return_explained: bool = False):
    """Project ``z`` (N, d) onto its first two principal components (centred, exact SVD).

    Returns an (N, 2) float tensor; the sign of each component is fixed so that its largest
    loading is positive. With ``return_explained=True`` also returns the two fractions of the
    variance they explain.
    """
    z = torch.as_tensor(z).detach().cpu().double()
    zc = z - z.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(zc, full_matrices=False)
    v = vh[:2].T  # (d, 2)
    sign = torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))
    v = v * torch.where(sign == 0, torch.ones_like(sign), sign)
    proj = (zc @ v).float()
    if return_explained:
        var = s.square()
        return proj, (var[:2] / var.sum().clamp_min(1e-300)).float()
    return proj


def _labels(labels, n: int) -> tuple[np.ndarray, bool]:
    lab = torch.as_tensor(labels).detach().cpu()
    if lab.dim() == 2 and lab.shape[1] > 1:  # one-hot / probabilities
        lab = lab.argmax(dim=1)
    lab = lab.reshape(-1).double().numpy()
    if lab.shape[0] != n:
        raise DataError(f"labels must have one entry per point ({n}), got {lab.shape[0]}")
    discrete = bool(np.all(lab == np.round(lab))) and len(np.unique(lab)) <= 20
    return lab, discrete


def _scatter(ax, xy: np.ndarray, lab, discrete: bool, fig: Figure) -> None:
    if lab is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6, linewidths=0)
    elif discrete:
        classes = np.unique(lab)
        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, c in enumerate(classes):
            m = lab == c
            ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.7, linewidths=0, color=cmap(i), label=f"{c:g}")
        ax.legend(markerscale=3, fontsize="small", title="label")
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=lab, s=4, alpha=0.7, linewidths=0, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="label")


def save_latent_scatter(z: torch.Tensor, path, *, labels: torch.Tensor | None = None, title: str = "",
                        max_points: int = 5000) -> Path:
    """Scatter latent codes ``z`` (N, d), e.g. a test set's posterior means, coloured by ``labels``
    when given (a legend for up to 20 integer classes, otherwise a colour bar).

    d == 2 is drawn as is; d > 2 is projected onto its first two principal components
    (:func:`project_2d`; the axis labels say so, with the variance each explains); d == 1 is a
    histogram (one per class) or, with continuous labels, a jittered strip. Rows with NaN/inf are
    dropped; at most ``max_points`` points, drawn at random with a fixed seed, are shown.
    """
    z = torch.as_tensor(z).detach().cpu().double()
    z = z[:, None] if z.dim() == 1 else z
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise DataError(f"save_latent_scatter: z must have shape (N, d) with N, d >= 1, got {tuple(z.shape)}")
    lab, discrete = (None, False) if labels is None else _labels(labels, z.shape[0])
    keep = torch.isfinite(z).all(dim=1)
    n_total, z = z.shape[0], z[keep]
    lab = None if lab is None else lab[keep.numpy()]
    if z.shape[0] == 0:
        raise DataError("save_latent_scatter: every row of z holds NaN or inf")
    d = z.shape[1]
    if d > 2:
        xy, ev = project_2d(z, return_explained=True)
        xlabel, ylabel = (f"PC{i + 1} of z ({100 * float(e):.1f}% of variance)" for i, e in enumerate(ev))
    else:
        xy, xlabel, ylabel = z.float(), "z1", "z2"
    xy = xy.numpy()
    notes = [f"d={d}"] + ([f"{n_total - len(xy)} non-finite rows dropped"] if len(xy) < n_total else [])
    if len(xy) > max_points:
        idx = torch.randperm(len(xy), generator=torch.Generator().manual_seed(0))[:max_points].numpy()
        xy, lab = xy[idx], None if lab is None else lab[idx]
        notes.append(f"{max_points} of {z.shape[0]} points shown")
    fig = Figure(figsize=(6.4, 5.2), dpi=100)
    ax = fig.add_subplot()
    if d == 1 and (lab is None or discrete):
        xlabel, ylabel, bins = "z", "count", np.histogram_bin_edges(xy[:, 0], bins=50)
        if lab is None:
            ax.hist(xy[:, 0], bins=bins, alpha=0.8)
        else:
            cmap = colormaps["tab10" if len(np.unique(lab)) <= 10 else "tab20"]
            for i, c in enumerate(np.unique(lab)):
                ax.hist(xy[lab == c, 0], bins=bins, histtype="step", color=cmap(i), label=f"{c:g}")
            ax.legend(fontsize="small", title="label")
    else:
        if d == 1:
            xlabel, ylabel = "z", "(random jitter)"
            xy = np.column_stack([xy[:, 0], np.random.default_rng(0).uniform(-1, 1, len(xy))])
        _scatter(ax, xy, lab, discrete, fig)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} ({', '.join(notes)})" if title else ", ".join(notes), fontsize="medium")
    return save_figure(fig, path)


def _as_float(v) -> float | None:
    if isinstance(v, torch.Tensor) and v.numel() == 1 or isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _read_history(history) -> list[Mapping]:
    if isinstance(history, (str, Path)):
        lines = Path(history).read_text().splitlines()
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        records = []
        for i in nonblank:
            try:
                records.append(json.loads(lines[i]))
            except json.JSONDecodeError as e:
                if i == nonblank[-1]:  # a half-written last line of a run still in progress
                    break
                raise DataError(f"{history}: line {i + 1} is not valid JSON ({e})") from None
    else:
        records = list(history)
    for r in records:
        if not isinstance(r, Mapping):
            raise DataError(f"training history must hold one dict per epoch, got {type(r).__name__}")
    return records


def _group(key: str) -> str:
    k = key.lower()
    if k == "lr" or k.startswith("lr_") or k.endswith("_lr") or "learning_rate" in k:
        return "lr"
    tokens = set(k.replace("-", "_").replace("/", "_").split("_"))
    return "loss" if tokens & _LOSS_WORDS else key


def _is_weight(key: str) -> bool:
    """A 0-1 schedule weight (the KL warm-up's beta), not a loss."""
    k = key.lower()
    return k in ("beta", "kl_weight") or k.endswith("_weight") or k.startswith("beta_")


def _ylabel(key: str) -> str:
    g = _group(key)
    if g == "lr":
        return "learning rate"
    if _is_weight(key):
        return "weight (0-1)"
    if g == "loss":
        return "nats / datapoint"
    return key


def _robust_limits(ys: Sequence[float]) -> tuple[float, float, int] | None:
    """Y-limits that show a curve without its early transient: the range of the values after the
    first tenth of the epochs, stretched to include earlier values lying within half that range
    of it, plus a 5% margin; and how many early values stay off-scale. None when none do."""
    if len(ys) < 5:
        return None
    tail = ys[max(1, len(ys) // 10):]
    lo, hi = min(tail), max(tail)
    span = (hi - lo) or abs(hi) or 1.0
    near = [y for y in ys if lo - 0.5 * span <= y <= hi + 0.5 * span]
    lo, hi = min(near), max(near)
    span = (hi - lo) or abs(hi) or 1.0
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    cut = sum(1 for y in ys if y < lo or y > hi)
    return (lo, hi, cut) if cut else None


def save_training_curves(history, path, *, keys: Sequence[str] | None = None) -> Path:
    """Plot training curves against the epoch, one panel per quantity.

    ``history`` is a list of per-epoch dicts, or the path of a JSON-lines file with one such dict
    per line (a half-written last line is skipped). Every numeric key except ``epoch`` and the
    timings (``time``, ``epoch_seconds``, ``cpu_seconds``, ``step``) is plotted (or just ``keys``),
    each on its own axes, sharing the epoch axis: a training loss (~100) and a validation bound
    (~-100) on one axes, or a 0-1 KL weight next to them, would flatten each other. Losses and
    bounds are scaled to their values after the first tenth of training (the first epochs'
    transient would otherwise squash the rest; the panel says how many points are off-scale),
    learning rates are log-scaled, 0-1 weights such as ``kl_weight`` shown on [0, 1]. Missing,
    None, NaN and infinite values are skipped; x is ``epoch``, else the row number.
    """
    records = _read_history(history)
    if keys is None:
        keys = list(dict.fromkeys(k for r in records for k, v in r.items()
                                  if k not in _SKIP_KEYS and _as_float(v) is not None))
    epochs = [_as_float(r.get("epoch")) for r in records]
    epochs = [float(i + 1) if e is None else e for i, e in enumerate(epochs)]
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key in keys:
        pts = [(x, _as_float(r.get(key))) for x, r in zip(epochs, records)]
        pts = [(x, y) for x, y in pts if y is not None and (y > 0 or _group(key) != "lr")]
        if pts:
            series[key] = ([x for x, _ in pts], [y for _, y in pts])
    # losses first, then other metrics, then 0-1 weights, learning rates last
    order = sorted(series, key=lambda k: (_group(k) != "loss", _is_weight(k), _group(k) == "lr"))
    fig = Figure(figsize=(7.0, 0.8 + 2.0 * max(1, len(order))), dpi=100)
    if not order:
        fig.text(0.5, 0.5, "no numeric values to plot", ha="center", va="center")
        return save_figure(fig, path)
    axes = fig.subplots(len(order), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, order):
        xs, ys = series[key]
        ax.plot(xs, ys, marker="." if len(xs) <= 50 else None, label=key)
        title = key
        if _group(key) == "lr":
            ax.set_yscale("log")
        elif _is_weight(key) and min(ys) >= 0 and max(ys) <= 1:
            ax.set_ylim(-0.05, 1.05)
        else:
            limits = _robust_limits(ys)
            if limits is not None:
                lo, hi, cut = limits
                ax.set_ylim(lo, hi)
                title += f"   ({cut} early value{'s' if cut > 1 else ''} off-scale)"
        ax.set_title(title, fontsize="medium", loc="left")
        ax.set_ylabel(_ylabel(key))
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    return save_figure(fig, path)


def save_codes_by_input(codes: Sequence[torch.Tensor], path, *, names: Sequence[str] | None = None,
                        title: str = "") -> Path:
    """Scatter posterior samples of a 2-D latent, one colour per input, with a legend.

    ``codes[i]`` is an (M, 2) tensor of samples from q(z | x_i), as in the toy experiment of the
    implicit optimal prior (Takahashi et al., 2019), where it shows how the posteriors of the
    inputs overlap or separate.
    """
    codes = [torch.as_tensor(c).detach().cpu().float() for c in codes]
    for i, c in enumerate(codes):
        if c.dim() != 2 or c.shape[1] != 2:
            raise DataError(f"save_codes_by_input: codes[{i}] must have shape (M, 2), got {tuple(c.shape)}")
    names = [f"x{i}" for i in range(len(codes))] if names is None else [str(s) for s in names]
    if len(names) != len(codes):
        raise DataError(f"save_codes_by_input: {len(names)} names for {len(codes)} inputs")
    cmap = colormaps["tab10" if len(codes) <= 10 else "tab20"]
    fig = Figure(figsize=(6.0, 6.0), dpi=100)
    ax = fig.add_subplot()
    for i, (c, name) in enumerate(zip(codes, names)):
        c = c[torch.isfinite(c).all(dim=1)].numpy()
        ax.scatter(c[:, 0], c[:, 1], s=6, alpha=0.5, linewidths=0, color=cmap(i % cmap.N), label=name)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if codes:
        ax.legend(markerscale=3, fontsize="small", title="input")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_codes_against_priors(panels: Sequence[tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
                              path, *, ncols: int = 3, max_points: int = 5000) -> Path:
    """The aggregated-posterior figure of the adversarial-autoencoder paper (Makhzani et al. 2016,
    Figure 2): one panel per ``(title, codes, labels, prior_samples)``, the 2-D test codes coloured
    by label over grey draws from the prior they were trained to match, on shared axes per panel.
    """
    if not panels:
        raise DataError("save_codes_against_priors: no panels")
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * min(ncols, len(panels)), 4.0 * nrows), dpi=100)
    gen = torch.Generator().manual_seed(0)
    for i, (title, codes, labels, prior) in enumerate(panels):
        z = torch.as_tensor(codes).detach().cpu().double()
        if z.dim() != 2 or z.shape[1] != 2:
            raise DataError(f"save_codes_against_priors: panel {title!r} needs (N, 2) codes, got {tuple(z.shape)}")
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if prior is not None:
            p = torch.as_tensor(prior).detach().cpu().double()[:max_points]
            ax.scatter(p[:, 0], p[:, 1], s=2, color="0.8", linewidths=0, label="prior")
        idx = torch.randperm(z.shape[0], generator=gen)[:max_points]
        lab, discrete = (None, False) if labels is None else _labels(torch.as_tensor(labels)[idx], len(idx))
        _scatter(ax, z[idx].numpy(), lab, discrete, fig)
        ax.set_title(title, fontsize="medium")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
    fig.tight_layout()
    return save_figure(fig, path)


def save_style_content_grid(images: torch.Tensor, image_shape, path, *, num_classes: int = 10,
                            row_title: str = "style code", upscale: int = 1) -> Path:
    """Images ``(rows * num_classes, H*W)`` in row-major order, one row per style code z and one
    column per class label y (Makhzani et al. 2016, Figure 6): columns headed by their label,
    rows by their style index, tiles separated by white gaps.
    """
    tiles = _as_images(images, image_shape)
    if tiles.shape[0] % num_classes:
        raise DataError(f"save_style_content_grid: {tiles.shape[0]} images is not a whole number of rows of {num_classes}")
    rows = tiles.shape[0] // num_classes
    grid = make_grid(F.interpolate(tiles, scale_factor=upscale, mode="nearest") if upscale > 1 else tiles,
                     nrow=num_classes, padding=2, pad_value=1.0)[0].numpy()
    h, w = (s * upscale + 2 for s in tiles.shape[-2:])
    fig = Figure(figsize=(0.6 * num_classes + 1.2, 0.6 * rows + 0.8), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([2 + w * j + (w - 2) / 2 for j in range(num_classes)], [str(j) for j in range(num_classes)])
    ax.set_yticks([2 + h * i + (h - 2) / 2 for i in range(rows)], [str(i + 1) for i in range(rows)])
    ax.xaxis.tick_top()
    ax.set_xlabel("label y given to the decoder")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel(row_title)
    ax.tick_params(length=0)
    return save_figure(fig, path)
