"""One rank of a distributed test run (started by tests/test_distributed.py with torchrun's
environment variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

    python distributed_worker.py MODE OUT [EPOCHS]

MODE ``loglik``: sharded ``log_likelihood`` of an untrained VAE on the test digits; ``deterministic``: a pair without sampling noise (a deterministic encoder, the ELBO of which
is a function of the weights and the batch alone) on dynamically binarized digits, so that two
ranks at global batch 2B must match one process at batch 2B; ``vae``: a stochastic VAE, for
resume; ``die``: rank 1 exits during epoch 2. Rank 0 writes OUT/params.pt.
"""

import os
import sys
import time

import torch

import ppvae
from ppvae import distributed as pdist
from ppvae.schemes import BoundScheme

torch.set_num_threads(1)
mode, out = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    pdist.init_from_environment(torch.device("cpu"))
data = ppvae.load_dataset("digits", limit=240)

if mode == "loglik":  # sharded evaluation: rank 0 saves the gathered per-datapoint values
    model, guide, _ = ppvae.build("vae", data.x_dim, {"z_dims": [2], "hidden": [[16]]}, seed=0)
    result = ppvae.log_likelihood(model, guide, data.test, num_samples=40, batch_size=16, diagnostics=True)
    if pdist.world()[0] == 0:
        torch.save({"log_px": result.log_px, "pareto_k": result.pareto_k}, os.path.join(out, "log_px.pt"))
    pdist.shutdown()
    sys.exit(0)


class DieOnRank1(BoundScheme):
    def step(self, model, guide, x, y, ctx):
        if ctx.epoch == 1 and ctx.step == 1 and pdist.world()[0] == 1:
            os._exit(3)  # a crash, not an exception: no clean shutdown of the process group
        yield from super().step(model, guide, x, y, ctx)


options = {"z_dim": 2, "hidden": [16], "encoder": "deterministic"} if mode == "deterministic" else {"z_dims": [2], "hidden": [[16]]}
family = "aae" if mode == "deterministic" else "vae"
model, guide, _ = ppvae.build(family, data.x_dim, options, seed=0)
scheme = DieOnRank1("elbo") if mode == "die" else BoundScheme("elbo")
t0 = time.time()
try:
    ppvae.fit(model, guide, data, scheme=scheme, epochs=epochs, batch_size=40, lr=1e-2, seed=1, progress=False,
              out_dir=os.path.join(out, "run"), resume=os.path.exists(os.path.join(out, "run", "last.pt")))
except Exception as e:  # noqa: BLE001 - report what the surviving rank saw, and how fast
    print(f"RANK {pdist.world()[0]} ERROR after {time.time() - t0:.1f} s: {type(e).__name__}: {e}", flush=True)
    # os._exit, not sys.exit: with its peer gone the process group cannot be left cleanly, and at
    # interpreter exit gloo's connection threads sometimes abort the process ("terminate called
    # without an active exception", SIGABRT) after the error above was reported (seen once in CI)
    os._exit(1)
if pdist.world()[0] == 0:
    torch.save({k: v for k, v in model.state_dict().items()} | {f"guide.{k}": v for k, v in guide.state_dict().items()},
               os.path.join(out, "params.pt"))
pdist.shutdown()  # a barrier first: a rank that exits while rank 0 still saves can make it abort
