"""The reader study of Haberl et al. (2025): can readers tell synthetic scans apart."""
