"""Fast-scan enhancement and low-count denoising (Qi et al. 2024; the review's DDSRCNN).

Sites make training pairs from their own standard scans (binomial thinning of
the raw counts, or real fast acquisitions), train enhancers locally (federated
by weights only), and evaluate them on their held-out scans; the centre sees
aggregates only.
"""
