"""Lossless compression with a trained VAE: bits-back ANS (Townsend et al. 2019) via constriction."""
