"""Selection: scoring scopes (per layer / global) and the rules that merge per-task masks."""
