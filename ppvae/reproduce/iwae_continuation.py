"""The IWAE paper's continuation experiment: switch the objective of a trained model::

    stage 1: train with objective A (the Table 1 cell A-k<k>-L<layers>, reused if present)
             evaluate: test NLL, active units                              -> "before"
    stage 2: continue the SAME weights with objective B for `continue_epochs` epochs
             (fresh Adam, eps 1e-4, constant lr `continue_lr`)
             evaluate again                                                -> "after"

for (A, B) = (VAE, IWAE) and (IWAE, VAE), same k. The paper reports that switching a VAE to the
IWAE objective improves both the NLL and the number of active units, and switching back to the
VAE objective loses part of it. Stage 2's settings (epochs = the budget's last schedule stage,
lr = the schedule's final 1e-4) are this harness's choice, stated in every result.

The control (``control=True``) runs the same stage 2 with B = A: the same extra epochs, learning
rate and fresh Adam on the first objective. A model far from convergence improves with any extra
training, so the effect of switching objectives is the switch's change in NLL *minus* the
control's (``write_continuation_table`` prints both and their difference).

Stage 2 lives in ``OUT/<binarization>/continuation/<A>-to-<B>-k<k>-L<layers>/`` and is resumable
like a Table 1 cell.

References:
  Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR, section 5.2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ppvae.checkpoint import load
from ppvae.errors import ConfigError
from ppvae.registry import build
from ppvae.checkpoint import write_text_atomic
from ppvae.reproduce.common import evaluate_cell, format_active, read_json, write_json_atomic
from ppvae.reproduce.iwae_table1 import Budget, Cell, _check_resumable, _site_order, run_cell
from ppvae.train import TrainConfig, fit

OTHER = {"vae": "iwae", "iwae": "vae"}
CONTINUE_LR = 1e-4  # the last learning rate of the paper's schedule (1e-3 * 10^(-7/7))


def run_continuation(first: str, k: int, layers: int, budget: Budget, data, out_root: str | Path, *, binarization: str,
                     data_spec: dict, device: torch.device | str = "cpu", eval_samples: int | None = None,
                     eval_points: int | None = None, seed: int = 0, batch_size: int | None = None,
                     continue_epochs: int | None = None, continue_lr: float = CONTINUE_LR, control: bool = False,
                     compile: bool = False, log: Callable[[str], None] = print) -> dict:
    """Stage 1 with objective ``first`` ("vae" | "iwae"), stage 2 with the other (with the same one
    when ``control``); returns and writes the before/after ``result.json`` of stage 2's folder."""
    if first not in OTHER:
        raise ConfigError(f"first objective must be 'vae' or 'iwae', got {first!r}")
    if k < 2:
        raise ConfigError("the continuation experiment needs k >= 2: at k=1 the VAE and IWAE objectives are the same")
    second = first if control else OTHER[first]
    eval_samples = eval_samples or budget.eval_samples
    eval_points = eval_points if eval_points is not None else budget.eval_points
    continue_epochs = continue_epochs or budget.continue_epochs
    common = dict(binarization=binarization, data_spec=data_spec, device=device, eval_samples=eval_samples,
                  eval_points=eval_points, seed=seed, batch_size=batch_size, compile=compile, log=log)
    before = run_cell(Cell(first, k, layers), budget, data, out_root, **common)
    stage1 = Path(out_root) / binarization / before["cell"]
    folder = Path(out_root) / binarization / "continuation" / f"{first}-to-{second}-k{k}-L{layers}"
    result_path = folder / "result.json"
    if result_path.exists():
        old = read_json(result_path)
        if (old["budget"], old["continue_epochs"], old["after"]["eval_samples"], old["eval_points"]) == \
                (budget.name, continue_epochs, eval_samples, eval_points):
            log(f"{folder.name}: done already (result.json)")
            return old
    cell2 = Cell(second, k, layers)
    config = TrainConfig(objective=cell2.train_objective, num_particles=k, epochs=continue_epochs,
                         batch_size=batch_size or budget.batch_size, lr=continue_lr, lr_schedule="constant",
                         adam_eps=1e-4, seed=seed, device=str(device), progress=False, compile=compile)
    model, guide, _ = build("vae", data.x_dim, {"stochastic_layers": layers}, seed=seed)
    resume = (folder / "last.pt").exists()
    if resume:
        _check_resumable(folder / "last.pt", config)
    else:  # start from stage 1's final weights
        ckpt = load(stage1 / "last.pt")
        model.load_state_dict(ckpt["model_state"])
        guide.load_state_dict(ckpt["guide_state"])
    meta = {"family": "vae", "model_options": {"stochastic_layers": layers}, "x_dim": data.x_dim, "dataset": data_spec,
            "image_shape": list(data.image_shape), "likelihood": data.likelihood, "continued_from": str(stage1)}
    log(f"{folder.name}: continuing {before['cell']} with the {second.upper()} objective{' (control)' if control else ''} ({cell2.train_objective}, k={k}) "
        f"for {continue_epochs} epochs at lr {continue_lr:g}")
    t0 = time.perf_counter()
    history = fit(model, guide, data, config, out_dir=folder, resume=resume, meta=meta).history
    x = data.test[:eval_points] if eval_points else data.test
    after = evaluate_cell(model, guide, x.to(device), num_samples=eval_samples, seed=seed)
    after["active_units_str"] = format_active(after["active_units"], _site_order(layers))
    after.update(epochs_trained=len(history), train_seconds=float(sum(h["time"] for h in history)),
                 final_train_loss=history[-1]["train_loss"] if history else None)
    keep = ("nll", "nll_se", "bounds", "active_units", "active_units_str", "num_test", "eval_samples", "epochs_trained",
            "train_seconds", "final_train_loss")
    result = {
        "first": first, "second": second, "control": control, "k": k, "layers": layers, "binarization": binarization, "budget": budget.name,
        "stage1_cell": before["cell"], "continue_epochs": continue_epochs, "continue_lr": continue_lr,
        "continue_objective": cell2.train_objective, "eval_points": eval_points, "device": str(device),
        "before": {key: before[key] for key in keep}, "after": {key: after[key] for key in keep},
        "this_session_seconds": time.perf_counter() - t0,
    }
    write_json_atomic(result, result_path)
    log(f"{folder.name}: NLL {before['nll']:.2f} -> {after['nll']:.2f}, active units "
        f"{before['active_units_str']} -> {after['active_units_str']}")
    return result


def _control_of(r: dict, results: list[dict]) -> dict | None:
    """The control run matching switch run ``r`` (same stage 1, same stage-2 length and lr), if present."""
    key = ("binarization", "budget", "k", "layers", "first", "continue_epochs", "continue_lr")
    for c in results:
        if c["second"] == c["first"] and all(c[name] == r[name] for name in key):
            return c
    return None


def write_continuation_table(out_root: str | Path) -> list[dict]:
    """``continuation.md`` / ``continuation.csv`` in ``out_root`` from every stage-2 result present.

    A switch run with its control beside it also gets ``switch minus control``: the change in NLL
    owed to the objective, net of what the same extra training does on the first objective."""
    out_root = Path(out_root)
    results = [read_json(p) for p in sorted(out_root.glob("*/continuation/*/result.json"))]
    if not results:
        raise ConfigError(f"no continuation results under {out_root}/<binarization>/continuation/")
    lines = [
        "# IWAE continuation experiment (Burda et al. 2016, section 5.2)",
        "",
        "Stage 1 trains with one objective (the Table 1 cell); stage 2 continues the same weights with the other "
        "objective (fresh Adam, constant lr, this harness's choice of length), or with the same one (the control: "
        "the same extra training without the switch). NLL on the test points; active units "
        "Cov_x(E_q[u|x]) > 1e-2, per layer bottom first. The paper: switching VAE -> IWAE improves NLL and active units. "
        "'switch minus control' is the switch's change in NLL less the control's.",
        "",
        "| binarization | budget | k | layers | stage 1 | NLL before | active before | stage 2 (epochs, lr) | NLL after "
        "| active after | change in NLL | switch minus control |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    csv_lines = ["binarization,budget,k,layers,first,second,control,epochs_before,nll_before,active_before,"
                 "continue_epochs,continue_lr,nll_after,nll_after_se,active_after,switch_minus_control"]
    for r in results:
        b, a = r["before"], r["after"]
        control = r["second"] == r["first"]
        c = None if control else _control_of(r, results)
        net = "" if c is None else f"{(a['nll'] - b['nll']) - (c['after']['nll'] - c['before']['nll']):+.2f}"
        stage2 = f"{r['second'].upper()}{' (control)' if control else ''} ({r['continue_epochs']} ep, {r['continue_lr']:g})"
        lines.append(
            f"| {r['binarization']} | {r['budget']} | {r['k']} | {r['layers']} | {r['first'].upper()} ({b['epochs_trained']} ep) "
            f"| {b['nll']:.2f} | {b['active_units_str']} | {stage2} "
            f"| {a['nll']:.2f} | {a['active_units_str']} | {a['nll'] - b['nll']:+.2f} | {net} |")
        csv_lines.append(",".join(str(v) for v in (
            r["binarization"], r["budget"], r["k"], r["layers"], r["first"], r["second"], control, b["epochs_trained"],
            b["nll"], b["active_units_str"], r["continue_epochs"], r["continue_lr"], a["nll"], a["nll_se"],
            a["active_units_str"], net)))
    write_text_atomic("\n".join(lines) + "\n", out_root / "continuation.md")
    write_text_atomic("\n".join(csv_lines) + "\n", out_root / "continuation.csv")
    return results
