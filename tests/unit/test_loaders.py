"""Loaders: every source type gives Documents with stable ids; bad files name themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import LoaderType, config_from_dict
from pipeline.core.errors import LoaderError
from pipeline.ingest.loaders import _READERS, load_documents
from tests.conftest import TINY_DOCS, write_jsonl


def _cfg(tmp_path: Path, **data: object):
    return config_from_dict({"data": data, "retrieval": {"retrievers": [{"type": "bm25"}]}}, base_dir=tmp_path)


def test_every_loader_type_has_a_reader() -> None:
    assert set(_READERS) == set(LoaderType)


def test_jsonl_ids_titles_metadata(tmp_path: Path, tiny_corpus: Path) -> None:
    docs = load_documents(_cfg(tmp_path, loader="jsonl", path=str(tiny_corpus), id_field="doc_id", title_field="title", metadata_fields=["category"]))
    assert [d.doc_id for d in docs] == [r["doc_id"] for r in TINY_DOCS]
    assert docs[0].text.startswith("서울\n서울은")
    assert docs[0].metadata == {"category": "여행", "title": "서울", "doc_id": "seoul"}


def test_content_hash_ids_are_stable(tmp_path: Path, tiny_corpus: Path) -> None:
    cfg = _cfg(tmp_path, loader="jsonl", path=str(tiny_corpus))
    first, second = load_documents(cfg), load_documents(cfg)
    assert [d.doc_id for d in first] == [d.doc_id for d in second]
    assert len({d.doc_id for d in first}) == len(TINY_DOCS)


def test_csv_parquet_json(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(TINY_DOCS)
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet")
    (tmp_path / "c.json").write_text(json.dumps(TINY_DOCS, ensure_ascii=False), encoding="utf-8")
    for loader, name in (("csv", "c.csv"), ("parquet", "c.parquet"), ("json", "c.json")):
        docs = load_documents(_cfg(tmp_path, loader=loader, path=name, id_field="doc_id"))
        assert [d.doc_id for d in docs] == [r["doc_id"] for r in TINY_DOCS], loader


def test_folder_reader(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("서울은 수도다.", encoding="utf-8")
    (folder / "sub" / "b.md").write_text("# 김치\n김치는 발효 음식이다.", encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    docs = load_documents(_cfg(tmp_path, loader="folder", path="docs"))
    assert sorted(d.doc_id for d in docs) == ["a.txt", "sub/b.md"]
    assert any("김치는" in d.text for d in docs)
    titles = {d.doc_id: d.metadata.get("title") for d in docs}
    assert titles == {"a.txt": None, "sub/b.md": "김치"}  # a Markdown file's first heading


def test_klue_and_squad_loaders(tmp_path: Path) -> None:
    squad = {"version": "1", "data": [{"title": "서울", "paragraphs": [{"context": "서울은 수도다.", "qas": [{"id": "1", "question": "수도는?", "answers": [{"text": "서울", "answer_start": 0}]}]}]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    docs = load_documents(_cfg(tmp_path, loader="squad", path="s.json"))
    assert len(docs) == 1 and "서울은" in docs[0].text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"nope\.jsonl does not exist"):
        load_documents(_cfg(tmp_path, loader="jsonl", path="nope.jsonl"))


def test_non_utf8_file_named(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes('{"text": "서울"}\n'.encode("cp949"))
    with pytest.raises(LoaderError, match=r"bad\.jsonl: not UTF-8"):
        load_documents(_cfg(tmp_path, loader="jsonl", path="bad.jsonl"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "k.txt").write_bytes("김치".encode("cp949"))
    with pytest.raises(LoaderError, match=r"k\.txt: not UTF-8"):
        load_documents(_cfg(tmp_path, loader="folder", path="docs"))


def test_bad_json_line_and_missing_field(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(LoaderError, match=r"b\.jsonl: line 2: invalid JSON"):
        load_documents(_cfg(tmp_path, loader="jsonl", path="b.jsonl"))
    write_jsonl(tmp_path / "m.jsonl", [{"body": "서울"}])
    with pytest.raises(LoaderError, match=r"m\.jsonl: line 1: missing text field 'text'"):
        load_documents(_cfg(tmp_path, loader="jsonl", path="m.jsonl"))


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(LoaderError, match="empty corpus"):
        load_documents(_cfg(tmp_path, loader="jsonl", path="e.jsonl"))


def test_duplicate_ids(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}])
    with pytest.raises(LoaderError, match="duplicate document id '1'"):
        load_documents(_cfg(tmp_path, loader="jsonl", path="d.jsonl", id_field="id"))


def test_hf_loader_reports_unreachable_hub(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="load_dataset failed"):
        load_documents(_cfg(tmp_path, loader="hf", dataset="klue", subset="mrc"))


# --------------------------------------------------------------------------- office formats and HTML (issue 13)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>복지 안내</title>
<style>body { color: red } .menu { display: none }</style>
<script>var token = "스크립트비밀값"; function track() {}</script></head>
<body><nav><a href="/">홈</a> | <a href="/about">회사소개</a> | <a href="/jobs">채용공고</a></nav>
<main><h1>복지 제도</h1><p>직원은 매년 한 번 건강검진을 받는다.</p><p>경조사 휴가는 닷새이다.</p></main>
<footer>저작권 2026 주식회사 예시</footer></body></html>"""


def _docx(path: Path, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    document.save(str(path))


def _hwpx(path: Path, paragraphs: list[str]) -> None:
    from hwpx import HwpxDocument

    document = HwpxDocument.new()
    for text in paragraphs:
        document.add_paragraph(text)
    document.save_to_path(str(path))


def test_html_is_main_text_with_title(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "welfare.html").write_text(PAGE, encoding="utf-8")
    (doc,) = load_documents(_cfg(tmp_path, loader="folder", path="docs"))
    assert "건강검진" in doc.text and "닷새" in doc.text
    for markup in ("스크립트비밀값", "track", "color: red", "채용공고", "저작권", "<p>", "<main>"):
        assert markup not in doc.text, markup
    assert doc.metadata["title"] and doc.metadata["doc_id"] == "welfare.html"


def test_docx_and_hwpx_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "hr").mkdir(parents=True)
    _docx(folder / "hr" / "leave.docx", ["휴가 규정", "연차는 입사 첫해 열하루이다."])
    _hwpx(folder / "hr" / "welfare.hwpx", ["복지 규정", "통근 버스는 오전 일곱 시에 출발한다."])
    docs = {d.doc_id: d for d in load_documents(_cfg(tmp_path, loader="folder", path="docs"))}
    assert set(docs) == {"hr/leave.docx", "hr/welfare.hwpx"}
    assert "연차는 입사 첫해 열하루이다." in docs["hr/leave.docx"].text
    assert "통근 버스는 오전 일곱 시에 출발한다." in docs["hr/welfare.hwpx"].text


def test_unreadable_files_are_skipped_and_listed(tmp_path: Path) -> None:
    from pipeline.ingest.loaders import SkippedFile

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ok.md").write_text("김치는 발효 음식이다.", encoding="utf-8")
    (folder / "broken.docx").write_bytes(b"not a zip")
    (folder / "broken.hwpx").write_bytes(b"PK\x03\x04 torn")
    (folder / "old.hwp").write_bytes(b"\xd0\xcf\x11\xe0 not an OLE file")
    (folder / "cp949.txt").write_bytes("김치".encode("cp949"))
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    skipped: list[SkippedFile] = []
    docs = load_documents(_cfg(tmp_path, loader="folder", path="docs"), skipped=skipped)
    assert [d.doc_id for d in docs] == ["ok.md"]
    assert sorted(Path(s.path).name for s in skipped) == ["broken.docx", "broken.hwpx", "cp949.txt", "empty.txt", "old.hwp"]
    assert all(s.reason and str(folder) not in s.reason for s in skipped)
    with pytest.raises(LoaderError, match=r"broken\.docx: cannot read"):  # no list: the first bad file is an error
        load_documents(_cfg(tmp_path, loader="folder", path="docs"))
