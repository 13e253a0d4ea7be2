"""The run config: validation before any model is loaded, and a cell's identity (hash)."""
