"""Data quality on cached features: the label audit, near-duplicates by embedding, and drift of incoming data."""
