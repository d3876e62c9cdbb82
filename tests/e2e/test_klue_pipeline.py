"""Issue acceptance, as a test: ingest then query the shared KLUE MRC subset with the real e5 model,
kiwi BM25 and fusion; the second ingest makes no embedding calls. (About 3-4 minutes on 2 cores.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import Pipeline
from pipeline.models.prepare import is_prepared, prepare_model
from tests.conftest import REPO, has_shared_data

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not has_shared_data(), reason="../shared/data not present")]


def test_klue_ingest_query_and_cached_reingest(tmp_path: Path) -> None:
    if not is_prepared():
        prepare_model()
    overrides = [f"index_dir={tmp_path / 'klue'}"]
    first = Pipeline.from_config(REPO / "configs" / "klue.yaml", overrides).ingest()
    assert first.documents == 1076 and first.new_embeddings == first.nodes > 1076
    pipe = Pipeline.from_config(REPO / "configs" / "klue.yaml", overrides)
    hits = pipe.retrieve("저먼윙스 여객기를 의도적으로 추락시킨 사람은?", top_k=5)
    assert hits[0].node.ref_doc_id == "klue-mrc-validation-context-000001"
    second = Pipeline.from_config(REPO / "configs" / "klue.yaml", overrides).ingest()
    assert (second.new_embeddings, second.unchanged) == (0, 1076)
