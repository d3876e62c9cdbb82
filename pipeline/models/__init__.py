"""Models: name -> local folder resolution, embeddings by provider, the offline e5 copy, the vector cache, LLMs."""
