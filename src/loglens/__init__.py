"""loglens — high-throughput log analytics and monitoring engine."""

__version__ = "0.1.0"
