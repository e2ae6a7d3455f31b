"""Data: image I/O, face alignment and detection, LMDB datasets, transforms."""
