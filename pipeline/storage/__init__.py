"""Storage: the FAISS store, the retriever registry, the index folder, integrity checks and snapshots."""
