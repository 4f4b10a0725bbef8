"""Scoring a model on a whole split: the ELBO, the importance-sampled NLL, collapse diagnostics."""
