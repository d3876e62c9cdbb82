"""QA-set readers: every layout to one QASet shape, clear errors, sampling and fingerprints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from llama_index.core.schema import Document

from pipeline.core.errors import EvaluationError, LoaderError
from pipeline.ingest.qa import (
    QA_READERS,
    QASet,
    context_doc_id,
    load_hf_klue_mrc,
    read_beir,
    read_klue_mrc,
    read_qa_set,
    read_squad,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "qa"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _flat_rows() -> list[dict]:
    return [json.loads(line) for line in (FIX / "klue_flat.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def test_klue_official_layout():
    qa = read_klue_mrc(FIX / "klue_official.json")
    assert qa.counts() == {"documents": 2, "questions": 4}
    assert all(isinstance(d, Document) for d in qa.documents)
    doc = qa.documents[0]
    assert doc.doc_id == context_doc_id(doc.text) and doc.doc_id.startswith("ctx-") and len(doc.doc_id) == 20
    assert doc.metadata == {"title": "서울시, 봄맞이 한강 축제 개최", "news_category": "사회", "source": "synthetic"}
    q = qa.questions[0]
    assert (q.qid, q.answers, q.relevant_doc_ids) == ("syn-klue-001", ["한강공원"], [doc.doc_id])
    assert q.metadata == {"question_type": 1, "news_category": "사회", "is_impossible": False}
    impossible = qa.questions[3]
    assert impossible.metadata["is_impossible"] is True and impossible.relevant_doc_ids == [qa.documents[1].doc_id]


def test_klue_flat_layouts_agree(tmp_path):
    official = read_klue_mrc(FIX / "klue_official.json")
    jsonl = read_klue_mrc(FIX / "klue_flat.jsonl")
    (tmp_path / "rows.json").write_text(json.dumps(_flat_rows(), ensure_ascii=False), encoding="utf-8")
    as_list = read_klue_mrc(tmp_path / "rows.json")
    import pyarrow.parquet as pq
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(_flat_rows()), tmp_path / "rows.parquet")
    parquet = read_klue_mrc(tmp_path / "rows.parquet")
    for qa in (jsonl, as_list, parquet):
        assert qa.doc_ids == official.doc_ids
        assert [(q.qid, q.relevant_doc_ids, q.answers) for q in qa.questions] == \
            [(q.qid, q.relevant_doc_ids, q.answers) for q in official.questions]
        assert qa.documents[1].metadata["news_category"] == "경제"
        assert qa.questions[3].metadata["is_impossible"] is True
        assert qa.questions[1].metadata["question_type"] == 2


def test_klue_subset_uses_context_id():
    qa = read_klue_mrc(FIX / "klue_subset.jsonl")
    assert qa.doc_ids == ["syn-context-000001", "syn-context-000002"]
    assert [q.relevant_doc_ids for q in qa.questions] == [["syn-context-000001"]] * 2 + [["syn-context-000002"]]
    assert qa.questions[2].answers == []
    assert qa.documents[0].metadata == {}


def test_squad_one_document_per_paragraph_even_with_same_text():
    qa = read_squad(FIX / "squad.json")
    assert qa.counts() == {"documents": 4, "questions": 5}
    assert len(set(qa.doc_ids)) == 4
    assert qa.documents[0].metadata == {"title": "세종대왕"}
    q2, q3 = qa.questions[1], qa.questions[2]
    assert q2.relevant_doc_ids == [qa.doc_ids[1], qa.doc_ids[2]]
    assert q3.relevant_doc_ids == [qa.doc_ids[2], qa.doc_ids[1]]
    strict = read_squad(FIX / "squad.json", identical_contexts_relevant=False)
    assert strict.questions[1].relevant_doc_ids == [qa.doc_ids[1]]
    assert read_squad(FIX / "squad.json").doc_ids == qa.doc_ids  # stable


def test_beir():
    root = FIX / "beir"
    qa = read_beir(root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / "test.tsv")
    assert qa.doc_ids == ["doc1", "doc2", "doc3"]
    assert qa.documents[0].metadata == {"title": "김치"}
    assert {q.qid: q.relevant_doc_ids for q in qa.questions} == {"q1": ["doc1", "doc3"], "q2": ["doc2"]}
    assert read_qa_set("beir", root).qrels() == qa.qrels()


def test_dispatcher_and_unknown_kind():
    assert read_qa_set("korquad", FIX / "squad.json").counts()["documents"] == 4
    assert read_qa_set("KLUE_MRC", FIX / "klue_subset.jsonl").counts()["questions"] == 3
    with pytest.raises(EvaluationError) as err:
        read_qa_set("natural_questions", FIX / "squad.json")
    for kind in QA_READERS:
        assert kind in str(err.value)


def test_missing_file():
    with pytest.raises(LoaderError, match="nope.jsonl"):
        read_klue_mrc(FIX / "nope.jsonl")


def test_bad_json_line_names_line(tmp_path):
    lines = (FIX / "klue_flat.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = '{"title": "broken", '
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(LoaderError, match=r"bad\.jsonl: line 3: invalid JSON"):
        read_klue_mrc(bad)


def test_bad_json_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(LoaderError, match=r"bad\.json: invalid JSON at line 1"):
        read_squad(bad)


def test_missing_question_field(tmp_path):
    rows = _flat_rows()
    del rows[1]["question"]
    bad = tmp_path / "noq.jsonl"
    bad.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(LoaderError, match=r"noq\.jsonl: line 2: missing field 'question'") as err:
        read_klue_mrc(bad)
    assert err.value.key == "question"
    obj = json.loads((FIX / "squad.json").read_text(encoding="utf-8"))
    del obj["data"][1]["paragraphs"][0]["qas"][1]["question"]
    (tmp_path / "sq.json").write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(LoaderError, match=r"data\[1\]\.paragraphs\[0\]\.qas\[1\]: missing field 'question'"):
        read_squad(tmp_path / "sq.json")


@pytest.mark.parametrize("name,text", [("empty.jsonl", "\n\n"), ("empty.json", '{"data": []}'), ("list.json", "[]")])
def test_empty_dataset(tmp_path, name, text):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(LoaderError, match=f"{name}: empty QA set"):
        read_klue_mrc(tmp_path / name)


def test_conflicting_context_id(tmp_path):
    rows = [json.loads(x) for x in (FIX / "klue_subset.jsonl").read_text(encoding="utf-8").splitlines()]
    rows[1]["context"] = "다른 문맥"
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(LoaderError, match="syn-context-000001"):
        read_klue_mrc(tmp_path / "c.jsonl")


def test_beir_errors(tmp_path):
    root = tmp_path / "b"
    shutil.copytree(FIX / "beir", root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc1\t0\n", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"test\.tsv: no relevance judgement"):
        read_qa_set("beir", root)
    with pytest.raises(LoaderError, match="dev.tsv"):
        read_qa_set("beir", root, split="dev")


def test_sample_keeps_full_corpus_and_is_seeded():
    qa = read_klue_mrc(FIX / "klue_official.json")
    a, b, c = qa.sample(2, seed=1), qa.sample(2, seed=1), qa.sample(2, seed=7)
    assert [q.qid for q in a.questions] == [q.qid for q in b.questions]
    assert len(a.questions) == 2 and a.doc_ids == qa.doc_ids
    assert qa.sample(None).counts() == qa.counts() == qa.sample(99).counts()
    assert len(c.questions) == 2
    with pytest.raises(EvaluationError, match="limit"):
        qa.sample(0)


def test_fingerprint():
    qa = read_klue_mrc(FIX / "klue_official.json")
    assert qa.fingerprint() == read_klue_mrc(FIX / "klue_official.json").fingerprint()
    assert len(qa.fingerprint()) == 64
    assert qa.sample(2, seed=0).fingerprint() != qa.fingerprint()
    other = QASet(name=qa.name, documents=qa.documents[::-1], questions=qa.questions)
    assert other.fingerprint() != qa.fingerprint()


class _FakeDatasets:
    def __init__(self, rows=None, exc=None):
        self.rows, self.exc, self.calls = rows, exc, []

    def load_dataset(self, *args, **kw):
        self.calls.append((args, kw))
        if self.exc:
            raise self.exc
        return self.rows


def test_hf_loader_converts_rows(monkeypatch):
    fake = _FakeDatasets(rows=_flat_rows())
    monkeypatch.setitem(__import__("sys").modules, "datasets", fake)
    qa = load_hf_klue_mrc(limit=3)
    assert fake.calls == [(("klue", "mrc"), {"split": "validation"})]
    assert qa.counts() == {"documents": 2, "questions": 3}
    assert qa.doc_ids == read_klue_mrc(FIX / "klue_official.json").doc_ids


def test_hf_loader_offline(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", _FakeDatasets(exc=ConnectionError("no route")))
    with pytest.raises(LoaderError, match="hub.*local file"):
        read_qa_set("hf_klue_mrc", split="validation")


@pytest.mark.e2e
def test_real_shared_files_counts():
    subset = SHARED / "klue-mrc" / "klue_mrc_validation_subset.jsonl"
    korquad = SHARED / "korquad-v1" / "KorQuAD_v1.0_dev.json"
    if not subset.is_file() or not korquad.is_file():
        pytest.skip(f"shared data not found under {SHARED}")
    klue = read_qa_set("klue_mrc", subset)
    assert klue.counts() == {"documents": 1076, "questions": 1098}
    kq = read_qa_set("korquad", korquad)
    assert kq.counts() == {"documents": 964, "questions": 5774}
    assert len(set(kq.doc_ids)) == 964
    for sample in ("klue-mrc-v1.1_dev.sample.json", "klue-mrc-v1.1_train.sample.json"):
        one = read_qa_set("klue_mrc", SHARED / "klue-mrc" / sample)
        assert one.counts() == {"documents": 1, "questions": 1}
        assert one.questions[0].metadata["question_type"] in (1, 2, 3)
