"""JSON API (OpenAPI at /docs)."""
