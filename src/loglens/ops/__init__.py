"""Operating the server: reload, self-metrics, status, shutdown, store watch, archiving."""
