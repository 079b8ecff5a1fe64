"""The adversarial-autoencoder paper's figures, from scratch: aggregated posteriors against priors,
and style/content separation.

    python -m ppvae.experiments.aae_figures --dataset mnist --data-root DATA --epochs 20 --out runs/aae-figures

1. **Aggregated posterior vs prior** (Makhzani et al. 2016, Figure 2): 2-D test codes of AAEs trained
   against a Gaussian, a 10-component mixture and a swiss-roll prior, of the label-conditioned AAE
   (label to the discriminator: each class its own mixture component), and of VAEs trained with
   the ELBO against the Gaussian and the mixture prior (the swiss roll has no density, so no VAE can
   use it). Each panel shows the prior's draws in grey behind the codes, coloured by label.
2. **Style and content** (Figure 6): an AAE whose decoder also sees the one-hot label, so its code z
   keeps only the style; each row decodes one style z ~ p(z) with every label.

Every model is its own resumable run folder ``OUT/<name>/``; figures are rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ppvae
from ppvae.plots import save_codes_against_priors, save_style_content_grid
from ppvae.schemes import AdversarialScheme

# name -> (family, options, scheme): every model of Figure 2, 2-D codes
PANELS: dict[str, tuple[str, dict, str]] = {
    "aae-gaussian": ("aae", {"prior": "gaussian"}, "aae"),
    "aae-mixture": ("aae", {"prior": "mixture"}, "aae"),
    "aae-swiss-roll": ("aae", {"prior": "swiss-roll"}, "aae"),
    "aae-mixture-supervised": ("aae", {"prior": "mixture", "conditional": "discriminator"}, "aae"),
    "vae-gaussian": ("aae", {"prior": "gaussian", "encoder": "gaussian"}, "bound"),
    "vae-mixture": ("aae", {"prior": "mixture", "encoder": "gaussian"}, "bound"),
}
TITLES = {
    "aae-gaussian": "AAE, Gaussian prior", "aae-mixture": "AAE, 10-Gaussian mixture prior",
    "aae-swiss-roll": "AAE, swiss-roll prior", "aae-mixture-supervised": "AAE, mixture, label to D",
    "vae-gaussian": "VAE (ELBO), Gaussian prior", "vae-mixture": "VAE (ELBO), mixture prior",
}


def train(name: str, family: str, options: dict, scheme: str, data, *, epochs: int, hidden: tuple[int, ...],
          out: Path, seed: int, lr: float, batch_size: int, progress: bool):
    """Train (or resume, or load when done) one model in ``out/name``; returns (model, guide)."""
    opts = {**options, "z_dim": options.get("z_dim", 2), "hidden": list(hidden), "likelihood": data.likelihood}
    model, guide, _ = ppvae.build(family, data.x_dim, opts, seed=seed)
    folder = out / name
    resume = (folder / "last.pt").exists()
    scheme_obj = AdversarialScheme(hidden=hidden) if scheme == "aae" else "bound"
    # the VAE's mixture prior has no analytic KL: the Monte Carlo ELBO ("elbo") for both VAEs
    ppvae.fit(model, guide, data, scheme=scheme_obj, objective="elbo", epochs=epochs, lr=lr, adam_betas=(0.5, 0.999),
              batch_size=batch_size, seed=seed, out_dir=folder, resume=resume, progress=progress,
              meta={"family": family, "model_options": opts, "x_dim": data.x_dim, "image_shape": list(data.image_shape)})
    return model.eval(), guide.eval()


@torch.no_grad()
def codes(guide, x: torch.Tensor) -> torch.Tensor:
    return guide.encode(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", default="1000,1000", help="widths of encoder, decoder and discriminator (the paper's 2x1000)")
    p.add_argument("--style-dim", type=int, default=8, help="size of the style code z of the style/content AAE")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated model names to train (default: all)")
    p.add_argument("--out", default="runs/aae-figures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = ppvae.load_dataset(args.dataset, args.data_root, limit=args.limit)
    x_test, y_test = data.test[:5000], data.labels("test")[:5000]
    only = set(args.only.split(",")) if args.only else None
    settings = dict(epochs=args.epochs, hidden=hidden, out=out, seed=args.seed, lr=args.lr,
                    batch_size=args.batch_size, progress=args.progress)
    panels, seconds = [], {}
    for name, (family, options, scheme) in PANELS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        model, guide = train(name, family, options, scheme, data, **settings)
        seconds[name] = time.perf_counter() - t0
        panels.append((TITLES[name], codes(guide, x_test), y_test, model.sample_prior(5000)))
        print(f"{name}: trained ({seconds[name]:.0f} s this session)", flush=True)
    if panels:
        path = save_codes_against_priors(panels, out / "aggregated_posteriors.png")
        print(f"wrote {path}")
    if not only or "style-content" in only:
        model, guide = train("style-content", "aae", {"conditional": "decoder", "z_dim": args.style_dim}, "aae", data, **settings)
        torch.manual_seed(args.seed)
        z = model.sample_prior(10)  # (10, style_dim): one style per row
        zz = z.repeat_interleave(10, 0)
        y = torch.arange(10).repeat(10)
        path = save_style_content_grid(model.decode(zz, y), data.image_shape, out / "style_content.png",
                                       upscale=max(1, 28 // max(data.image_shape)))
        print(f"wrote {path}")
    (out / "settings.json").write_text(json.dumps({**vars(args), "seconds_this_session": seconds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
