"""The classifier at a site: local training, sampling, augmentation, rounds."""
