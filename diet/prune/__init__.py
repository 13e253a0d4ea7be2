"""Physical pruning: slicing MLP channels, attention heads, hidden dimensions and whole layers; applying a method's selection."""
