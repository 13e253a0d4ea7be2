"""Errors the framework raises on bad input; each names the bad value and what is allowed."""


class DietConfigError(ValueError):
    """A configuration value is invalid. Raised before any heavy work starts."""


class UnsupportedArchitectureError(DietConfigError):
    """The model's architecture has no adapter."""


class NoRoomError(DietConfigError):
    """The folder a model is saved to has too little free space. Raised before anything is written there."""


class PrunedCheckpointError(RuntimeError):
    """A pruned checkpoint folder is missing, corrupted or inconsistent with its pruning spec."""
