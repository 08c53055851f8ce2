"""Data sets: manifest, sources, splits, image decoding, the pixel cache, change detection, demo and benchmark data."""
