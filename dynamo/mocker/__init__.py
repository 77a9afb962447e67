"""A simulated engine: answers like a model, with configurable timing, and needs no model or GPU."""
