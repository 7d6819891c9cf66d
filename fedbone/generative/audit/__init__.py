"""The privacy audit of synthetic images: no release may copy a training scan."""
