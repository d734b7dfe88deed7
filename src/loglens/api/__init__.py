"""HTTP API: `create_app(settings)` wires stages together; routes are thin adapters."""
