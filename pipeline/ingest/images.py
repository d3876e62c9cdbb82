"""Image corpora (``data.loader: images``): jpg/png files as Documents, and their vectors.

Each Document's id and text are the path relative to ``data.path`` (so BM25 can match file names);
``embedding.provider: clip`` embeds the images and a ``dense`` retriever keeps them in FAISS::

    data: {loader: images, path: data/photos}
    chunking: {splitter: none}
    embedding: {provider: clip, model: clip-ViT-B-32, text_model: clip-ViT-B-32-multilingual-v1}
    retrieval: {retrievers: [{type: dense}]}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from llama_index.core import Document
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode

from ..core.errors import ConfigError, LoaderError
from ..core.io import sha256_file
from ..models.clip import can_embed_images

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGE_PATH_KEY = "image_path"
_IMAGE_METADATA = ("image_path", "file_path", "file_name", "doc_id", "image_sha256", "width", "height", "modality")


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
