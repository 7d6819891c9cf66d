"""fedbone's Flower ServerApp: the study workflow and its phases (issue #3)."""
