"""Tests of ppvae.plots: pixel-exact grids, the manifold's latent grid, PCA projection, and the
contents of the matplotlib figures (captured before they are written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm

import ppvae.plots as plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_gray(path) -> np.ndarray:
    """The PNG as floats in [0, 1], (rows, cols)."""
    assert Path(path).read_bytes()[:8] == PNG_MAGIC
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0


def tile(img: np.ndarray, r: int, c: int, h: int, w: int, padding: int, upscale: int = 1) -> np.ndarray:
    y0 = padding + r * (h * upscale + padding)
    x0 = padding + c * (w * upscale + padding)
    return img[y0:y0 + h * upscale, x0:x0 + w * upscale]


@pytest.fixture
def figs(monkeypatch):
    """Collect every matplotlib Figure that ppvae.plots writes."""
    captured, save = [], plots.save_figure

    def spy(fig, path):
        captured.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    return captured


# ----------------------------------------------------------------------------- image grids
def test_grid_size_and_white_tiles(tmp_path):
    n, (h, w), nrow, pad, up = 7, (5, 3), 3, 2, 2
    out = plots.save_image_grid(torch.ones(n, h * w), (h, w), str(tmp_path / "a" / "b" / "g.png"),
                                nrow=nrow, padding=pad, upscale=up)
    assert isinstance(out, Path) and out == tmp_path / "a" / "b" / "g.png"
    img = load_gray(out)
    rows = math.ceil(n / nrow)
    assert img.shape == (rows * (h * up + pad) + pad, nrow * (w * up + pad) + pad) == (38, 26)
    for i in range(rows * nrow):
        expected = 1.0 if i < n else 0.0  # slots past N stay black
        assert np.all(tile(img, i // nrow, i % nrow, h, w, pad, up) == expected), i
    assert np.all(img[:pad] == 0) and np.all(img[:, :pad] == 0)  # the frame is black padding
    assert np.all(img[pad + h * up: 2 * pad + h * up] == 0)  # ... and so is the gap between rows


def test_grid_orientation_upscale_and_default_nrow(tmp_path):
    h, w, up = 4, 6, 3
    x = torch.zeros(10, h, w)  # (N, H, W) is accepted too
    x[:, 1, 4] = 1.0  # one bright pixel at row 1, column 4
    x[3] = 0.5
    img = load_gray(plots.save_image_grid(x, (h, w), tmp_path / "g.png", padding=1, upscale=up))
    cols = math.ceil(math.sqrt(10))  # 4 columns, 3 rows
    assert img.shape == (3 * (h * up + 1) + 1, cols * (w * up + 1) + 1)
    t0 = tile(img, 0, 0, h, w, 1, up)
    expected = np.zeros((h * up, w * up))
    expected[1 * up:2 * up, 4 * up:5 * up] = 1.0  # nearest-neighbour block, not blurred
    np.testing.assert_array_equal(t0, expected)
    np.testing.assert_allclose(tile(img, 0, 3, h, w, 1, up), 128 / 255)


def test_grid_single_image_keeps_padding_and_clamps(tmp_path):
    img = load_gray(plots.save_image_grid(torch.full((1, 6), 7.0), (2, 3), tmp_path / "one.png", padding=2))
    assert img.shape == (2 + 4, 3 + 4)
    assert np.all(img[2:4, 2:5] == 1.0) and img.sum() == 6.0
    img = load_gray(plots.save_image_grid(-torch.ones(2, 6), (2, 3), tmp_path / "neg.png"))
    assert np.all(img == 0.0)


def test_grid_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="image_shape"):
        plots.save_image_grid(torch.ones(4, 10), (3, 3), tmp_path / "bad.png")


# ----------------------------------------------------------------------------- reconstructions
@pytest.mark.parametrize("n, ncol", [(5, None), (10, 4)])
def test_reconstructions_are_under_their_originals(tmp_path, n, ncol):
    h, w, pad, up = 3, 4, 2, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, h * w), generator=g).float() / 255  # exact in 8-bit PNG
    img = load_gray(plots.save_reconstructions(x, 1 - x, (h, w), tmp_path / "r.png", n=n,
                                               ncol=ncol, upscale=up))
    cols = ncol or min(n, 8)
    chunks = math.ceil(n / cols)
    grid_w = cols * (w * up + pad) + pad
    assert img.shape[0] == 2 * chunks * (h * up + pad) + pad and img.shape[1] > grid_w
    labels, img = img[:, :-grid_w], img[:, -grid_w:]  # a white column naming the rows, then the grid
    assert labels.min() < 0.5 and np.median(labels) == 1.0
    for i in range(chunks * cols):
        r, c = 2 * (i // cols), i % cols
        top, below = tile(img, r, c, h, w, pad, up), tile(img, r + 1, c, h, w, pad, up)
        if i < n:
            want = x[i].reshape(h, w).repeat_interleave(up, 0).repeat_interleave(up, 1).numpy()
            np.testing.assert_allclose(top, want, atol=1e-6)
            np.testing.assert_allclose(below, 1 - top, atol=1e-6)
        else:  # items past n are not drawn
            assert np.all(top == 0) and np.all(below == 0)


# ----------------------------------------------------------------------------- manifold
def test_manifold_decodes_the_inverse_normal_cdf_grid_once(tmp_path):
    n, h, w = 5, 2, 2
    calls = []

    def decode(z):
        calls.append(z.clone())
        return torch.zeros(z.shape[0], h * w)

    plots.save_manifold(decode, (h, w), tmp_path / "m.png", n=n)
    assert len(calls) == 1 and calls[0].shape == (n * n, 2)
    q = norm.ppf((np.arange(n) + 0.5) / n)
    expected = np.array([[q[c], q[n - 1 - r]] for r in range(n) for c in range(n)])
    np.testing.assert_allclose(calls[0].numpy(), expected, atol=1e-5)
    assert len(np.unique(q)) == n and np.all(np.isfinite(q))  # strictly inside (0, 1)


@pytest.mark.parametrize("dim, direction", [(0, "columns"), (1, "rows")])
def test_manifold_orientation(tmp_path, dim, direction):
    n, h, w, up, pad = 6, 4, 4, 2, 1

    def decode(z):  # brightness Phi(z_dim): a constant tile per latent point
        return torch.distributions.Normal(0.0, 1.0).cdf(z[:, dim:dim + 1]).expand(-1, h * w)

    img = load_gray(plots.save_manifold(decode, (h, w), tmp_path / "m.png", n=n, upscale=up, padding=pad))
    assert img.shape == (n * (h * up + pad) + pad,) * 2
    means = np.array([[tile(img, r, c, h, w, pad, up).mean() for c in range(n)] for r in range(n)])
    if direction == "columns":  # z1 grows left to right, constant down a column
        assert np.all(np.diff(means, axis=1) > 0) and np.allclose(np.diff(means, axis=0), 0)
    else:  # z2 grows upwards: the top row is the brightest
        assert np.all(np.diff(means, axis=0) < 0) and np.allclose(np.diff(means, axis=1), 0)


@pytest.mark.parametrize("bad", [lambda z: torch.zeros(z.shape[0], 5), lambda z: torch.zeros(3, 4),
                                 lambda z: torch.zeros(z.shape[0])])
def test_manifold_wrong_shape_raises(tmp_path, bad):
    with pytest.raises(ValueError, match="decode"):
        plots.save_manifold(bad, (2, 2), tmp_path / "m.png", n=4)
    assert not (tmp_path / "m.png").exists()


# ----------------------------------------------------------------------------- latent scatter
def test_project_2d_matches_numpy_pca():
    g = np.random.default_rng(0)
    rot, _ = np.linalg.qr(g.normal(size=(5, 5)))
    z = (g.normal(size=(300, 5)) * [5.0, 3.0, 1.0, 0.5, 0.1]) @ rot.T + 10.0
    proj, explained = plots.project_2d(torch.tensor(z, dtype=torch.float32), return_explained=True)
    zc = z - z.mean(0)
    u, s, vt = np.linalg.svd(zc, full_matrices=False)
    want = zc @ vt[:2].T
    assert proj.shape == (300, 2)
    for k in range(2):
        sign = np.sign(np.dot(proj[:, k].numpy(), want[:, k]))
        np.testing.assert_allclose(sign * proj[:, k].numpy(), want[:, k], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(explained.numpy(), (s[:2] ** 2) / (s ** 2).sum(), rtol=1e-5)
    assert not np.allclose(np.abs(want), np.abs(zc[:, :2]), atol=0.1)  # PCA is not "first two coords"


def test_scatter_2d_and_5d(tmp_path, figs, monkeypatch):
    z2 = torch.randn(50, 2)
    out = plots.save_latent_scatter(z2, tmp_path / "s2.png", labels=torch.arange(50) % 3, title="t")
    assert load_gray(out).size > 0
    ax = figs[-1].axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["0", "1", "2"]
    np.testing.assert_allclose(np.concatenate([c.get_offsets() for c in ax.collections]).sum(0),
                               z2.sum(0).numpy(), rtol=1e-4, atol=1e-4)

    spied, real = [], plots.project_2d

    def spy(z, **kw):
        spied.append(z)
        return real(z, **kw)

    monkeypatch.setattr(plots, "project_2d", spy)
    z5 = torch.randn(8000, 5)
    plots.save_latent_scatter(z5, tmp_path / "s5.png", labels=torch.rand(8000), max_points=1000)
    assert len(spied) == 1 and spied[0].shape == (8000, 5)  # PCA on every point ...
    ax = figs[-1].axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 1000  # ... only max_points drawn
    assert "PC1" in ax.get_xlabel() and "PC2" in ax.get_ylabel()
    assert len(figs[-1].axes) == 2  # continuous labels get a colour bar



def test_scatter_1d_nan_rows_and_one_hot_labels(tmp_path, figs):
    z = torch.randn(40, 1)
    z[3] = float("nan")
    labels = torch.nn.functional.one_hot(torch.arange(40) % 4, 4)
    assert plots.save_latent_scatter(z, tmp_path / "s1.png", labels=labels).exists()
    ax = figs[-1].axes[0]
    assert len(ax.get_legend().get_texts()) == 4 and "1 non-finite" in ax.get_title()
    assert plots.save_latent_scatter(z[:, 0], tmp_path / "s1b.png").exists()
    with pytest.raises(ValueError):
        plots.save_latent_scatter(torch.randn(10, 2), tmp_path / "x.png", labels=torch.zeros(9))


# ----------------------------------------------------------------------------- training curves
HISTORY = [
    {"epoch": 1, "train_loss": 120.0, "valid_elbo": -125.0, "lr": 1e-3, "time": 4.2, "beta": 0.1},
    {"epoch": 2, "train_loss": 110.0, "valid_elbo": None, "lr": 5e-4, "time": 4.1, "beta": 0.2},
    {"epoch": 3, "train_loss": float("nan"), "valid_elbo": -112.0, "lr": 2.5e-4, "time": 4.0},
    {"epoch": 4, "train_loss": 100.0, "valid_elbo": -108.0, "lr": 1.25e-4, "time": 4.0, "beta": 0.4,
     "note": "checkpoint"},
]


def _curves(fig) -> dict:
    return {line.get_label(): (ax, list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines()}


def _check_history_figure(fig):
    curves = _curves(fig)
    assert set(curves) == {"train_loss", "valid_elbo", "lr", "beta"}  # no epoch/time/note
    assert curves["train_loss"][1:] == ([1, 2, 4], [120.0, 110.0, 100.0])  # NaN skipped
    assert curves["valid_elbo"][1:] == ([1, 3, 4], [-125.0, -112.0, -108.0])  # None skipped
    # one panel per quantity: a loss (~100) and a bound (~-100) on one axes flatten each other
    assert len({id(ax) for ax, _, _ in curves.values()}) == 4 == len(fig.axes)
    lr_ax = curves["lr"][0]
    assert lr_ax.get_yscale() == "log"
    assert curves["beta"][0].get_ylim() == (-0.05, 1.05)  # a 0-1 weight on its own [0, 1] scale


def test_training_curves_from_list(tmp_path, figs):
    assert plots.save_training_curves(HISTORY, tmp_path / "c.png").exists()
    _check_history_figure(figs[-1])


def test_training_curves_from_jsonl(tmp_path, figs):
    log = tmp_path / "history.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in HISTORY) + "\n" + '{"epoch": 5, "train_lo')
    assert plots.save_training_curves(log, tmp_path / "c.png").exists()  # half-written line skipped
    _check_history_figure(figs[-1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 1, "x": 1}\nnot json\n{"epoch": 2, "x": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        plots.save_training_curves(bad, tmp_path / "b.png")


def test_training_curves_keys_and_empty(tmp_path, figs):
    history = [{"step": i, "train_loss": float(i), "kl": torch.tensor(2.0 * i)} for i in range(3)]
    plots.save_training_curves(history, tmp_path / "k.png", keys=["kl", "missing"])
    curves = _curves(figs[-1])
    assert set(curves) == {"kl"} and curves["kl"][1:] == ([1, 2, 3], [0.0, 2.0, 4.0])  # x = row number
    assert plots.save_training_curves([{"epoch": 1, "lr": None}], tmp_path / "e.png").exists()
    assert plots.save_training_curves([], tmp_path / "e2.png").exists()


# ----------------------------------------------------------------------------- codes by input
def test_codes_by_input(tmp_path, figs):
    codes = [torch.randn(30, 2) + 3 * i for i in range(4)]
    out = plots.save_codes_by_input(codes, tmp_path / "codes.png", names=list("abcd"), title="toy")
    assert load_gray(out).size > 0
    ax = figs[-1].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list("abcd")
    for c, coll in zip(codes, ax.collections):
        np.testing.assert_allclose(coll.get_offsets(), c.numpy())
    colours = {tuple(coll.get_facecolor()[0]) for coll in ax.collections}
    assert len(colours) == 4
    with pytest.raises(ValueError, match=r"codes\[1\]"):
        plots.save_codes_by_input([torch.randn(5, 2), torch.randn(5, 3)], tmp_path / "x.png")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors(tmp_path):
    x = torch.rand(4, 16, device="cuda")
    assert plots.save_image_grid(x, (4, 4), tmp_path / "g.png").exists()
    assert plots.save_reconstructions(x, x, (4, 4), tmp_path / "r.png").exists()
    assert plots.save_manifold(lambda z: torch.sigmoid(z.sum(1, keepdim=True)).expand(-1, 16), (4, 4),
                               tmp_path / "m.png", n=3, device="cuda").exists()
    assert plots.save_latent_scatter(torch.randn(20, 3, device="cuda"), tmp_path / "s.png",
                                     labels=torch.arange(20, device="cuda") % 2).exists()
    assert plots.save_codes_by_input([torch.randn(5, 2, device="cuda")], tmp_path / "c.png").exists()


def test_training_curves_scale_losses_past_the_early_transient(tmp_path, figs):
    history = [{"epoch": e, "train_loss": 500.0 if e == 1 else 100.0 - e, "kl_weight": min(1.0, e / 5)} for e in range(1, 21)]
    plots.save_training_curves(history, tmp_path / "t.png")
    curves = _curves(figs[-1])
    loss_ax = curves["train_loss"][0]
    lo, hi = loss_ax.get_ylim()
    assert lo > 75 and hi < 100  # epoch 1's 500 does not squash the rest
    assert "1 early value off-scale" in loss_ax.get_title(loc="left")
    assert curves["kl_weight"][0].get_ylim() == (-0.05, 1.05)


def test_manifold_gaps_are_coloured(tmp_path):
    n, h, w, pad = 3, 2, 2, 2
    path = plots.save_manifold(lambda z: torch.zeros(z.shape[0], h * w), (h, w), tmp_path / "m.png", n=n, padding=pad)
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
    np.testing.assert_allclose(rgb[0, 0], plots.GAP_COLOR, atol=1 / 255)  # the frame
    np.testing.assert_allclose(rgb[pad + h, pad], plots.GAP_COLOR, atol=1 / 255)  # between rows
    assert np.all(rgb[pad:pad + h, pad:pad + w] == 0)  # the black tiles themselves


def test_reconstructions_of_several_models_get_one_named_row_each(tmp_path):
    h, w, pad = 3, 4, 2
    x = torch.rand(5, h * w)
    path = plots.save_reconstructions(x, {"a": 1 - x, "b": x * 0.5}, (h, w), tmp_path / "r.png", n=5, ncol=5)
    img = load_gray(path)
    grid_w = 5 * (w + pad) + pad
    assert img.shape[0] == 3 * (h + pad) + pad
    grid = img[:, -grid_w:]
    for c in range(5):
        np.testing.assert_allclose(tile(grid, 1, c, h, w, pad), 1 - tile(grid, 0, c, h, w, pad), atol=1 / 255)
        np.testing.assert_allclose(tile(grid, 2, c, h, w, pad), 0.5 * tile(grid, 0, c, h, w, pad), atol=1 / 255)
