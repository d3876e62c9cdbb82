"""Images and text in one vector space (CLIP): image loader, CLIP embedding, image queries.

An image corpus goes through the ordinary pipeline: ``data.loader: images`` reads jpg/png files
into Documents (id = path relative to ``data.path``, ``image_path`` in metadata),
``embedding.provider: clip`` embeds them with the CLIP image encoder, and a ``dense`` retriever keeps
them in their own FAISS index. Text queries (``Pipeline.retrieve``, ``ragpipe query``) then return
images; ``retrieve_by_image`` (``ragpipe query-image``) asks with an image instead, against an image
index (image -> image) or a text index built with the same CLIP model (image -> text)::

    data: {loader: images, path: data/photos}
    chunking: {splitter: none}
    embedding: {provider: clip, model: clip-ViT-B-32, text_model: clip-ViT-B-32-multilingual-v1}
    retrieval: {retrievers: [{type: dense}]}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np
from llama_index.core import Document
from llama_index.core.embeddings import BaseEmbedding, MultiModalEmbedding
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr

from ._io import sha256_file
from .config import EmbeddingConfig
from .errors import ConfigError, LoaderError, ModelResolutionError, RetrievalError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGE_PATH_KEY = "image_path"
_IMAGE_METADATA = ("image_path", "file_path", "file_name", "doc_id", "image_sha256", "width", "height", "modality")


# --------------------------------------------------------------------------- loading


def read_images(path: str | Path, recursive: bool = True) -> list[Document]:
    """jpg/png files under ``path`` (a folder or one file) as Documents, sorted by relative path.

    Each Document's id and text are the path relative to ``path`` (so BM25 can match file names);
    metadata carries ``image_path`` (absolute), ``file_path``, ``image_sha256`` (a changed image is a
    changed document), ``width``, ``height`` and ``modality: image``.

    :raises LoaderError: ``path`` is missing, or a file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.exists():
        raise LoaderError(f"data.path: {root} does not exist", path=root, key="data.path")
    if root.is_file():
        files, base = [root], root.parent
    else:
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        base = root
    docs: list[Document] = []
    for file in files:
        if file.suffix.lower() not in IMAGE_EXTENSIONS:
            raise LoaderError(f"{file}: not an image ({', '.join(IMAGE_EXTENSIONS)})", path=file)
        try:
            with Image.open(file) as img:
                img.verify()
                width, height = img.size
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise LoaderError(f"{file}: cannot read image ({type(exc).__name__}: {exc})", path=file) from exc
        rel = file.relative_to(base).as_posix()
        meta = {"image_path": str(file.resolve()), "file_path": rel, "file_name": file.name, "doc_id": rel,
                "image_sha256": sha256_file(file), "width": width, "height": height, "modality": "image"}
        docs.append(Document(text=rel, id_=rel, metadata=meta, excluded_embed_metadata_keys=list(_IMAGE_METADATA),
                             excluded_llm_metadata_keys=list(_IMAGE_METADATA)))
    logger.info("found %d images under %s", len(docs), root)
    return docs


# --------------------------------------------------------------------------- embedding


def _open_rgb(path: str | Path) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read image ({exc})", path=path) from exc


class ClipEmbedding(MultiModalEmbedding):
    """Text and images into one space with a sentence-transformers CLIP model.

    Text goes through ``text_model`` when given (e.g. a multilingual text encoder distilled into the
    CLIP space), else through the CLIP text tower. Vectors are L2-normalised when ``normalize``.
    """

    normalize: bool = Field(True, description="L2-normalise vectors")
    query_instruction: str = Field("", description="Prefix for queries")
    text_instruction: str = Field("", description="Prefix for passages")
    _model: Any = PrivateAttr()
    _text_model: Any = PrivateAttr(default=None)

    def __init__(self, model: Any, text_model: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = model
        self._text_model = text_model

    @classmethod
    def class_name(cls) -> str:
        return "ClipEmbedding"

    def _encode(self, inputs: list[Any], text: bool) -> np.ndarray:
        import torch

        model = self._text_model if text and self._text_model is not None else self._model
        with torch.inference_mode():
            vecs = model.encode(inputs, batch_size=self.embed_batch_size, normalize_embeddings=self.normalize,
                                show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encode([self.query_instruction + query], text=True)[0].tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encode([self.text_instruction + t for t in texts], text=True).tolist()

    def _get_image_embedding(self, img_file_path: Any) -> List[float]:
        return self.get_image_embeddings_array([img_file_path])[0].tolist()

    async def _aget_image_embedding(self, img_file_path: Any) -> List[float]:
        return self._get_image_embedding(img_file_path)

    def _get_image_embeddings(self, img_file_paths: List[Any]) -> List[List[float]]:
        return self.get_image_embeddings_array(img_file_paths).tolist()

    def get_image_embeddings_array(self, paths: Sequence[Any]) -> np.ndarray:
        """Image vectors as one float32 array; items are paths or PIL images."""
        images = [p if hasattr(p, "convert") else _open_rgb(p) for p in paths]
        return self._encode(images, text=False) if images else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self._model.get_embedding_dimension())


def build_clip_embedding(cfg: EmbeddingConfig) -> ClipEmbedding:
    """``embedding.provider: clip`` -> ``ClipEmbedding`` (models resolved like any other, loaded once)."""
    from .models import resolve_model

    model = _load_st(resolve_model(cfg.model), cfg)
    text_model = _load_st(resolve_model(cfg.text_model), cfg) if cfg.text_model else None
    dim = model.get_embedding_dimension()
    if text_model is not None and text_model.get_embedding_dimension() != dim:
        raise ConfigError(
            f"embedding.text_model {cfg.text_model!r} gives {text_model.get_embedding_dimension()}-dimensional vectors, "
            f"embedding.model {cfg.model!r} gives {dim}: the text model must be trained into the image model's space",
            key="embedding.text_model", value=cfg.text_model,
        )
    logger.info("embedding %s (clip%s) dim=%d", cfg.model, f", text via {cfg.text_model}" if cfg.text_model else "", dim)
    emb = ClipEmbedding(model, text_model, model_name=cfg.model, embed_batch_size=cfg.batch_size, normalize=cfg.normalize,
                        query_instruction=cfg.query_prompt, text_instruction=cfg.passage_prompt)
    return emb


def _load_st(path: str, cfg: EmbeddingConfig) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelResolutionError("embedding.provider clip needs sentence-transformers: pip install 'ragpipe[hf]'") from exc
    try:
        model = SentenceTransformer(path, device=cfg.device)
    except Exception as exc:
        raise ModelResolutionError(f"CLIP model at {path} failed to load: {type(exc).__name__}: {exc}", value=path) from exc
    native = model.max_seq_length
    if native:
        model.max_seq_length = min(native, cfg.max_length)  # CLIP's text tower has 77 positions
    return model


def can_embed_images(embed_model: BaseEmbedding) -> bool:
    return callable(getattr(embed_model, "get_image_embeddings_array", None)) and isinstance(
        getattr(embed_model, "inner", embed_model), ClipEmbedding
    )


def embed_image_nodes(embed_model: BaseEmbedding, nodes: Sequence[BaseNode]) -> np.ndarray:
    """Vectors for ``nodes`` in order: image nodes (``image_path`` metadata) by image, the rest by text."""
    if not can_embed_images(embed_model):
        raise ConfigError("image documents need an image-capable embedding: set embedding.provider: clip",
                          key="embedding.provider")
    is_image = [bool(n.metadata.get(IMAGE_PATH_KEY)) for n in nodes]
    images = [i for i, flag in enumerate(is_image) if flag]
    texts = [i for i, flag in enumerate(is_image) if not flag]
    img_vecs = embed_model.get_image_embeddings_array([nodes[i].metadata[IMAGE_PATH_KEY] for i in images])
    out = np.zeros((len(nodes), img_vecs.shape[1]), dtype=np.float32)
    out[images] = img_vecs
    if texts:
        contents = [nodes[i].get_content(metadata_mode=MetadataMode.NONE) for i in texts]
        out[texts] = np.asarray(embed_model.get_text_embedding_batch(contents), dtype=np.float32)
    return out


# --------------------------------------------------------------------------- querying


def retrieve_by_image(pipeline: Any, image: str | Path, top_k: int | None = None) -> list[NodeWithScore]:
    """Ask a dense-only ``Pipeline`` built with ``embedding.provider: clip`` with an image.

    An image index answers with similar images, a text index with matching texts.

    :raises ConfigError: the pipeline has a non-dense retriever or a text-only embedding.
    :raises LoaderError: the image can't be read.
    """
    cfg = pipeline.config
    others = [r.name for r in cfg.retrieval.retrievers if r.type != "dense"]
    if others:
        raise ConfigError(f"image queries need dense retrievers only; {', '.join(others)} can't read an image",
                          key="retrieval.retrievers")
    embed = pipeline.embed_model
    inner = getattr(embed, "inner", embed)
    if not isinstance(inner, ClipEmbedding):
        raise ConfigError("image queries need embedding.provider: clip", key="embedding.provider")
    path = Path(image)
    if not path.is_file():
        raise RetrievalError(f"{path}: image not found", path=path)
    if cfg.rerank.enabled:
        raise ConfigError("image queries can't be reranked by a text cross-encoder; set rerank.enabled: false",
                          key="rerank.enabled")
    vector = inner.get_image_embeddings_array([path])[0].tolist()
    # Pipeline.retrieve hands the bundle through; the dense retriever uses its embedding as is
    return pipeline.retrieve(QueryBundle(query_str=f"image:{path.name}", embedding=vector), top_k=top_k)
