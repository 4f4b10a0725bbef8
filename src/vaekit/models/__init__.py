"""The model family: distributions, likelihoods, priors, posteriors, networks, the VAE and its objectives.

Importing the package registers every model kind (models/hierarchy.py adds `hierarchical` to
`vae.KINDS`), so `VAE(cfg)` can build any of them.
"""

from vaekit.models import hierarchy as hierarchy
