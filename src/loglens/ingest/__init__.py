"""Collectors: one module per protocol, all feeding `ingest.pipeline.IngestPipeline`."""
