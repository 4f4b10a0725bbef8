"""The model family: distributions, likelihoods, priors, posteriors, networks, the VAE and its objectives."""
