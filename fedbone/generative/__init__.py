"""Synthetic scans: the conditional GAN's training, synthesis, curation, release."""
