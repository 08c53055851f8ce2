"""Feature extraction: engines, the feature fingerprint, the feature store and the extraction loop."""
