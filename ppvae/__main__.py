"""``python -m ppvae ...`` (and ``torchrun --nproc_per_node=N -m ppvae train ...``): the CLI."""

import sys

from ppvae.cli import main

sys.exit(main())
