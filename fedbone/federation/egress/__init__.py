"""The egress guard: what a site's reply may hold, and the log of what left."""
