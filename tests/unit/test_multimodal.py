"""Images and text in one space: image loader, tiny CLIP built in the test, FAISS index, text<->image queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.core.errors import ConfigError, LoaderError
from tests.conftest import version_dir

COLOURS = {"red.png": (255, 0, 0), "blue.png": (0, 0, 255), "nested/green.png": (0, 200, 0)}
CAPTIONS = [{"doc_id": "c-red", "text": "red apple"}, {"doc_id": "c-blue", "text": "blue sky"},
            {"doc_id": "c-green", "text": "green grass"}, {"doc_id": "c-ko", "text": "빨간 사과"}]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (transformers CLIPModel + CLIPProcessor), loadable by sentence-transformers."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    root = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(set("abcdefghijklmnopqrstuvwxyz:.빨간사과파란하늘초록풀")):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    fast = CLIPTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                             unk_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=32)
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    CLIPProcessor(image_processor=images, tokenizer=fast).save_pretrained(root)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(root)
    return root


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "photos"
    for name, rgb in COLOURS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 20), rgb).save(root / name)
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


def _config(tmp_path: Path, data: dict[str, Any], clip_dir: Path, **retrieval: Any) -> dict[str, Any]:
    return {
        "index_dir": str(tmp_path / "index"),
        "data": data,
        "chunking": {"splitter": "none"},
        "embedding": {"provider": "clip", "model": str(clip_dir), "batch_size": 4},
        "retrieval": {"top_k": 3, "retrievers": [{"type": "dense", "candidate_k": 5}], **retrieval},
    }


def _clip(clip_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(clip_dir), device="cpu")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


# --------------------------------------------------------------------------- loader


def test_read_images_gives_stable_ids_and_image_paths(image_dir: Path) -> None:
    from pipeline.ingest.images import read_images

    docs = read_images(image_dir)
    assert [d.doc_id for d in docs] == ["blue.png", "nested/green.png", "red.png"]
    red = docs[2]
    assert red.text == "red.png" and red.metadata["image_path"] == str((image_dir / "red.png").resolve())
    assert red.metadata["width"] == 24 and red.metadata["height"] == 20 and red.metadata["modality"] == "image"
    assert [d.doc_id for d in read_images(image_dir, recursive=False)] == ["blue.png", "red.png"]
    assert [d.doc_id for d in read_images(image_dir / "red.png")] == ["red.png"]


def test_unreadable_image_names_the_file(image_dir: Path) -> None:
    from pipeline.ingest.images import read_images

    (image_dir / "broken.png").write_bytes(b"not a png")
    with pytest.raises(LoaderError, match=r"broken\.png: cannot read image"):
        read_images(image_dir)


# --------------------------------------------------------------------------- text -> image, image -> image


def test_text_query_finds_images_through_the_pipeline(tmp_path: Path, image_dir: Path, tiny_clip_dir: Path) -> None:
    from PIL import Image

    from pipeline.serving.pipeline import Pipeline

    config = _config(tmp_path, {"loader": "images", "path": str(image_dir)}, tiny_clip_dir)
    report = Pipeline.from_config(config).ingest()
    assert report.documents == 3 and report.new_embeddings == 3
    assert (version_dir(tmp_path / "index") / "retrievers" / "dense" / "index.faiss").exists()

    pipe = Pipeline.from_config(config)  # a fresh process: everything reloads from the index directory
    hits = pipe.retrieve("red apple", top_k=3)
    assert {h.node.metadata["image_path"] for h in hits} == {str((image_dir / n).resolve()) for n in COLOURS}

    st = _clip(tiny_clip_dir)
    names = [h.node.ref_doc_id for h in hits]
    images = [Image.open(image_dir / n).convert("RGB") for n in names]
    expected = _cos(st.encode(["red apple"]), st.encode(images))[0]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-4)
    assert list(expected) == sorted(expected, reverse=True)

    from pipeline.serving.image_query import retrieve_by_image

    same = retrieve_by_image(pipe, image_dir / "nested" / "green.png", top_k=1)
    assert same[0].node.ref_doc_id == "nested/green.png" and same[0].score == pytest.approx(1.0, abs=1e-4)


def test_image_vectors_are_cached_by_content(tmp_path: Path, image_dir: Path, tiny_clip_dir: Path) -> None:
    from PIL import Image

    from pipeline.serving.pipeline import Pipeline

    config = _config(tmp_path, {"loader": "images", "path": str(image_dir)}, tiny_clip_dir)
    Pipeline.from_config(config).ingest()
    again = Pipeline.from_config(config).ingest()
    assert again.new_embeddings == 0 and again.unchanged == 3  # unchanged images are not even looked up
    Image.new("RGB", (24, 20), (255, 255, 0)).save(image_dir / "red.png")  # same name, new pixels
    changed = Pipeline.from_config(config).ingest()
    assert changed.changed == 1 and changed.new_embeddings == 1


# --------------------------------------------------------------------------- image -> text


def test_image_query_finds_texts(tmp_path: Path, image_dir: Path, tiny_clip_dir: Path) -> None:
    from PIL import Image

    from pipeline.serving.pipeline import Pipeline
    from pipeline.serving.image_query import retrieve_by_image
    from tests.conftest import write_jsonl

    corpus = write_jsonl(tmp_path / "captions.jsonl", CAPTIONS)
    config = _config(tmp_path, {"loader": "jsonl", "path": str(corpus), "id_field": "doc_id"}, tiny_clip_dir)
    Pipeline.from_config(config).ingest()
    hits = retrieve_by_image(Pipeline.from_config(config), image_dir / "blue.png", top_k=4)

    st = _clip(tiny_clip_dir)
    sims = _cos(st.encode([Image.open(image_dir / "blue.png").convert("RGB")]), st.encode([c["text"] for c in CAPTIONS]))[0]
    order = [CAPTIONS[i]["doc_id"] for i in np.argsort(-sims)]
    assert [h.node.ref_doc_id for h in hits] == order
    np.testing.assert_allclose([h.score for h in hits], np.sort(sims)[::-1], atol=1e-4)


def test_cli_query_image(tmp_path: Path, image_dir: Path, tiny_clip_dir: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.serving.cli import app

    cfg = tmp_path / "images.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, {"loader": "images", "path": str(image_dir)}, tiny_clip_dir)),
                   encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(app, ["-q", "ingest", "-c", str(cfg)]).exit_code == 0
    res = runner.invoke(app, ["-q", "query-image", str(image_dir / "red.png"), "-c", str(cfg), "--json", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["results"][0]["doc_id"] == "red.png" and out["results"][0]["metadata"]["image_path"].endswith("red.png")
    res = runner.invoke(app, ["-q", "query", "red", "-c", str(cfg), "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["results"]) == 3


# --------------------------------------------------------------------------- errors


def test_images_need_a_clip_embedding(tmp_path: Path, image_dir: Path, tiny_model_dir: Path) -> None:
    from pipeline.serving.pipeline import Pipeline

    config = _config(tmp_path, {"loader": "images", "path": str(image_dir)}, tiny_model_dir)
    config["embedding"] = {"model": str(tiny_model_dir), "precision": "fp32"}
    with pytest.raises(ConfigError, match="embedding.provider: clip"):
        Pipeline.from_config(config).ingest()


def test_image_queries_refuse_text_only_retrievers(tmp_path: Path, image_dir: Path, tiny_clip_dir: Path) -> None:
    from pipeline.serving.pipeline import Pipeline
    from pipeline.serving.image_query import retrieve_by_image

    config = _config(tmp_path, {"loader": "images", "path": str(image_dir)}, tiny_clip_dir)
    config["retrieval"]["retrievers"].append({"type": "bm25", "name": "bm25", "tokenizer": {"name": "whitespace"}})
    with pytest.raises(ConfigError, match="dense retrievers only; bm25"):
        retrieve_by_image(Pipeline.from_config(config), image_dir / "red.png")


def test_clip_config_defaults_and_text_model_check(tmp_path: Path, tiny_clip_dir: Path, tiny_model_dir: Path) -> None:
    from pipeline.config import EmbeddingConfig
    from pipeline.models.embedding import build_embedding

    cfg = EmbeddingConfig(provider="clip", model=str(tiny_clip_dir))
    assert cfg.query_prompt == "" and cfg.passage_prompt == ""  # no e5 prefixes for CLIP
    with pytest.raises(ConfigError, match=r"embedding.text_model .* 32-dimensional .* gives 8"):
        build_embedding(EmbeddingConfig(provider="clip", model=str(tiny_clip_dir), text_model=str(tiny_model_dir)))
