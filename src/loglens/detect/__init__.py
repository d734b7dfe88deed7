"""Detection: log template mining and the detectors built on it."""
