"""Synthetic images after the audit: the site's release register, the pool."""
