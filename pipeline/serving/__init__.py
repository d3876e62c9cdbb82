"""Serving: the Pipeline facade, query engines, the HTTP service and the CLI."""
