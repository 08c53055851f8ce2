"""Core: params, paths, errors, safe file writes, progress, hardware and process environment. No ML here."""
