"""fedbone's Flower ClientApp: thin handlers around the fedbone library (issue #3)."""
