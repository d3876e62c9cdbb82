"""Config: every shipped YAML validates; bad input names the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, FusionMode, apply_overrides, config_from_dict, load_config
from pipeline.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates(path: Path) -> None:
    from pipeline.config.evaluation import is_eval_config, load_eval_config

    if is_eval_config(path):
        load_eval_config(path)
    else:
        cfg = load_config(path)
        assert isinstance(cfg, Config)


def test_shipped_configs_exist() -> None:
    assert (REPO / "configs" / "default.yaml") in ALL_CONFIGS


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


MINIMAL = """
data: {loader: jsonl, path: x.jsonl}
retrieval:
  retrievers:
    - {type: bm25, name: bm25}
"""


def test_minimal_config_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.retrieval.fusion.mode == FusionMode.DIST_BASED_SCORE  # the tuned default
    assert cfg.retrieval.retrievers[0].candidate_k == 40
    assert cfg.embedding.model == "intfloat/multilingual-e5-small"
    assert cfg.llm.provider.value == "none"
    assert cfg.resolve_path("x.jsonl") == tmp_path / "x.jsonl"


def test_unknown_key_names_path(tmp_path: Path) -> None:
    bad = MINIMAL.replace("{type: bm25, name: bm25}", "{type: bm25, name: bm25, k3: 1}")
    with pytest.raises(ConfigError, match=r"retrieval\.retrievers\[0\]\.k3: unknown key"):
        load_config(_write(tmp_path, bad))


def test_unknown_component_lists_allowed(tmp_path: Path) -> None:
    bad = MINIMAL.replace("type: bm25", "type: splade")
    with pytest.raises(ConfigError, match=r"retrieval\.retrievers\[0\]\.type = 'splade' is not one of: bm25, tfidf, bow, dense"):
        load_config(_write(tmp_path, bad))


def test_bad_enum_lists_allowed(tmp_path: Path) -> None:
    bad = MINIMAL + "  fusion: {mode: rff}\n"
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.mode = 'rff'.*'rrf'"):
        load_config(_write(tmp_path, bad))


def test_wrong_type_names_key(tmp_path: Path) -> None:
    bad = MINIMAL + "  top_k: many\n"
    with pytest.raises(ConfigError, match=r"retrieval\.top_k = 'many'"):
        load_config(_write(tmp_path, bad))


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "data: {loader: jsonl\nretrieval: [")
    with pytest.raises(ConfigError, match=r"c\.yaml: malformed YAML at line"):
        load_config(p)


def test_missing_and_non_utf8_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "latin.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_overrides(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL), ["retrieval.fusion.mode=relative_score", "retrieval.retrievers[0].k1=0.9", "retrieval.top_k=7"])
    assert cfg.retrieval.fusion.mode == FusionMode.RELATIVE_SCORE
    assert cfg.retrieval.retrievers[0].k1 == 0.9
    assert cfg.retrieval.top_k == 7
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["retrieval.top_k"])


def test_duplicate_retriever_names_rejected() -> None:
    raw = {"retrieval": {"retrievers": [{"type": "bm25", "name": "x"}, {"type": "dense", "name": "x"}]}}
    with pytest.raises(ConfigError, match="repeated: x"):
        config_from_dict(raw)


def test_config_is_frozen_and_fingerprinted(tmp_path: Path) -> None:
    a = load_config(_write(tmp_path, MINIMAL))
    b = load_config(_write(tmp_path, MINIMAL), ["retrieval.top_k=9"])
    assert a.fingerprint() != b.fingerprint()
    with pytest.raises(Exception):
        a.name = "other"  # type: ignore[misc]


def test_readme_shows_the_shipped_default_config() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert (REPO / "configs" / "default.yaml").read_text(encoding="utf-8") in readme


def test_config_reference_is_current() -> None:
    """docs/config.md is what the schema generates; regenerate with the command in its header."""
    from pipeline.config.reference import reference_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    text = reference_markdown()
    for key in ("data.extensions", "data.recursive", "embedding.device", "runtime.threads", "evaluation.setups_dir"):
        assert f"| `{key}` |" in text, key
    assert doc.read_text(encoding="utf-8") == text, "docs/config.md is stale: python -m pipeline.config.reference > docs/config.md"


def test_eval_config_outside_configs_uses_the_shipped_setups(tmp_path: Path) -> None:
    from pipeline.config.evaluation import load_eval_config
    from pipeline.core.errors import ConfigError

    path = tmp_path / "my-eval.yaml"
    path.write_text("evaluation:\n  dataset: {kind: squad, path: qa.json}\n  setups: [bm25-kiwi]\n  default_setup: bm25-kiwi\n",
                    encoding="utf-8")
    setups = load_eval_config(path).load_setups()
    assert setups["bm25-kiwi"].retrieval.retrievers[0].type == "bm25"
    with pytest.raises(ConfigError, match=r"no setup file .*bm25-kiwi\.yaml.*set evaluation\.setups_dir"):
        load_eval_config(path, ["evaluation.setups_dir=nowhere"]).load_setups()
