"""Getting a model into memory: registry, settings, download, placement, loading, memory readings."""
