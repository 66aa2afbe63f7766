"""Bottom layer: helpers every layer may use (registry, secrets, retry, category labels, paths, progress)."""
