"""Training: fine-tune the embedding model (and rerankers) on QA pairs, with manifests and an overlap guard."""
