"""Scoring models on a manifest split (cached features or raw samples) and the parity gates that compare two ways of
computing the same probabilities."""
