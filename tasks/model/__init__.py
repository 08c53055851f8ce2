"""Models: the backbone catalog and builders, the head format and its fitters, the shipped torch classifier."""
