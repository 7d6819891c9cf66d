"""fedbone: federated multi-centre training for bone scintigraphy.

Library code lives here and knows nothing of Flower except ``fedbone.federation``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
