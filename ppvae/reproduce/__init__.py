"""Paper reproduction harnesses, run from the command line as ``ppvae reproduce ...``.

- ``iwae-table1``: Burda, Grosse & Salakhutdinov (2016), Table 1 — VAE vs IWAE, k in {1, 5, 50},
  1 or 2 stochastic layers, test NLL (k=5000 importance samples) and active units
  (:mod:`ppvae.reproduce.iwae_table1`).
- ``iwae-continuation``: the same paper's continuation experiment — train with one objective,
  continue the same weights with the other (:mod:`ppvae.reproduce.iwae_continuation`).

Each grid cell is its own resumable run folder, so cells can be trained by several processes side
by side and the table is rebuilt from whatever ``result.json`` files are present.
"""
