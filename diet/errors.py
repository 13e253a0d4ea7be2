"""Errors the framework raises on bad input; each names the bad value and what is allowed."""


class DietConfigError(ValueError):
    """A configuration value is invalid. Raised before any heavy work starts."""


class UnsupportedArchitectureError(DietConfigError):
    """The model's architecture has no adapter."""
