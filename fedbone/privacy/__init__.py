"""Differential privacy at a site: budgets, the tamper-evident ledger, noise.

Every differentially private release a site makes (a classifier round, a GAN
round, a noisy statistic) is checked against the site's budget and recorded in
its append-only, hash-chained ledger before anything leaves the site.
"""
