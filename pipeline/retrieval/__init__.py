"""Retrieval: filters, tokenizers, the lexical/dense retrievers, fusion, rerank and the stateless SearchPipeline."""
