"""Ingest: documents from files and QA sets, images, chunking into nodes, passage vectors."""
