"""What reading a binarized digit costs a classifier: a plain supervised MLP on MNIST, trained on
dynamically binarized images, scored each epoch on the test set's grey levels and on its one fixed
binary draw (the values ppvae's held-out likelihoods are scored on).

    python -m ppvae.experiments.mlp_binarization --data-root DATA --epochs 20 --threads 1

The network is the semi-supervised AAE's encoder without the style head (784-500-500-10 ReLU),
trained with the table's settings of ``ppvae.experiments.aae_categorical`` (Adam lr 1e-3 x
0.95^epoch, betas (0.5, 0.999), batch 100, the 50,000 training images, each batch a fresh
Bernoulli draw of the grey levels); no adversarial or reconstruction phase. It is the reference
for what the categorical AAE's supervised errors are measured against: the gap between the two
columns is the information one binary draw of a test image loses, which no training budget buys
back (``Dataset.grey_levels``).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import ppvae
from ppvae.nn import mlp
from ppvae.semisupervised import classification_error


@torch.no_grad()
def errors(net: nn.Module, data) -> dict[str, float]:
    """Test error on the grey levels and on the fixed binary draw."""
    labels = data.labels("test")
    return {"grey": classification_error(net(data.grey_levels("test")).argmax(-1), labels),
            "binarized": classification_error(net(data.test).argmax(-1), labels)}


def train(data, *, epochs: int, hidden: tuple[int, ...], lr: float, gamma: float, batch_size: int,
          seed: int, grey_training: bool = False, report=print) -> list[dict[str, float]]:
    """Train the MLP, each batch a fresh binary draw (``grey_training``: the grey levels themselves);
    the test errors after every epoch."""
    torch.manual_seed(seed)  # before the network is built: the same seed gives the same numbers
    num_classes = int(data.labels("train").max()) + 1
    net = mlp(data.x_dim, hidden, num_classes, act="relu")
    opt = torch.optim.Adam(net.parameters(), lr, betas=(0.5, 0.999))
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    generator = torch.Generator().manual_seed(seed)
    labels, history = data.labels("train"), []
    for epoch in range(1, epochs + 1):
        net.train()
        for idx, x in data.batches("train", batch_size, generator=generator):
            if grey_training:  # the same order and draws are made; the draw is not used
                x = data.grey_levels("train").index_select(0, idx)
            loss = nn.functional.cross_entropy(net(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
        net.eval()
        history.append({"epoch": epoch, **errors(net, data)})
        report(f"epoch {epoch}: test error grey levels {100 * history[-1]['grey']:.2f}%, "
               f"binarized {100 * history[-1]['binarized']:.2f}%")
    return history


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="mnist", help="a labelled dataset with dynamic binarization")
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", default="500,500")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-gamma", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-grey", action="store_true", help="train on the grey levels instead of binary draws")
    p.add_argument("--limit", type=int, default=None, help="first N rows of each split (quick checks)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    torch.set_num_threads(args.threads)
    data = ppvae.load_dataset(args.dataset, args.data_root, limit=args.limit)
    if data.labels("train") is None or not data.dynamic_binarization:
        p.error(f"{data.name} needs labels and dynamic binarization (mnist, fashion-mnist, digits)")
    history = train(data, epochs=args.epochs, hidden=tuple(int(h) for h in args.hidden.split(",")), lr=args.lr,
                    gamma=args.lr_gamma, batch_size=args.batch_size, seed=args.seed,
                    grey_training=args.train_grey)
    last = history[-5:]
    grey, binary = (sum(h[k] for h in last) / len(last) for k in ("grey", "binarized"))
    print(f"mean of the last {len(last)} epochs: grey levels {100 * grey:.2f}%, binarized {100 * binary:.2f}%, "
          f"gap {100 * (binary - grey):.2f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
