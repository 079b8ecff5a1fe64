"""Small, runnable experiments that reproduce the seed papers' figures (``python -m ppvae.experiments.<name>``)."""
