"""The model family: distributions, likelihoods, priors, posteriors, networks, the kinds (`base.BaseVAE`, the
one-group `vae.VAE`, the top-down `hierarchy.TopDownVAE`) and `vae.build_model`, which reads `vae.KINDS`."""
