"""Putting a trained model to work: exploring its latent space, scoring, images, reports, compression."""
