"""Data layer: NM DICOM reading, preprocessing, manifests, caches, phantoms."""
