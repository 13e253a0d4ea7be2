"""Calibration: the samples (task train splits or generic text), the activation profiler and its cache."""
