"""Process runtime: the ModelManager (single-flight loads, the bounded inference executor)."""
