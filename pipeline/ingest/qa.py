"""QA sets for retrieval evaluation: KLUE MRC, SQuAD/KorQuAD and BEIR files parsed into one shape.

Every reader returns a :class:`QASet`: the distinct contexts as LlamaIndex ``Document`` objects with a
stable ``doc_id``, and the questions with the ids of their relevant documents.

Example::

    qa = read_qa_set("klue_mrc", "../shared/data/klue-mrc/klue_mrc_validation_subset.jsonl")
    small = qa.sample(100, seed=0)   # 100 questions, the full corpus
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from llama_index.core.schema import Document

from ..core.errors import EvaluationError, LoaderError
from ..core.io import iter_jsonl

logger = logging.getLogger(__name__)

__all__ = [
    "QAQuestion", "QASet", "QA_READERS", "read_qa_set", "read_klue_mrc", "read_squad", "read_beir",
    "load_hf_klue_mrc", "context_doc_id",
]

_DOC_META_KEYS = ("title", "news_category", "source")
_QUESTION_META_KEYS = ("question_type", "news_category", "is_impossible")


@dataclass(frozen=True)
class QAQuestion:
    """One question and the ids of the documents that answer it."""

    qid: str
    text: str
    relevant_doc_ids: list[str]
    answers: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class QASet:
    """A corpus of distinct contexts plus questions whose gold documents are in that corpus."""

    name: str
    documents: list[Document]
    questions: list[QAQuestion]
    source: str = ""

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus order."""
        return [d.doc_id for d in self.documents]

    def qrels(self) -> dict[str, set[str]]:
        """``qid -> set of relevant doc ids``."""
        return {q.qid: set(q.relevant_doc_ids) for q in self.questions}

    def counts(self) -> dict[str, int]:
        """Number of documents and questions."""
        return {"documents": len(self.documents), "questions": len(self.questions)}

    def sample(self, limit: int | None, seed: int = 0) -> "QASet":
        """``limit`` questions drawn at random with ``seed`` (original order kept); the corpus stays FULL.

        Keeping every document means a sampled run retrieves against the same haystack as a full run,
        so scores stay comparable (only the question set shrinks). ``None`` or a limit at or above
        the question count returns a copy with every question.
        """
        if limit is None or limit >= len(self.questions):
            return replace(self, questions=list(self.questions))
        if limit < 1:
            raise EvaluationError(f"{self.name}: --limit must be >= 1, got {limit}", value=limit)
        picked = sorted(random.Random(seed).sample(range(len(self.questions)), limit))
        logger.info("sampled %d of %d questions (seed=%d); corpus kept whole (%d documents)",
                    limit, len(self.questions), seed, len(self.documents))
        return replace(self, questions=[self.questions[i] for i in picked])

    def fingerprint(self) -> str:
        """sha256 over doc ids + texts and question ids + texts + relevant ids + answers, in order."""
        h = hashlib.sha256()
        for d in self.documents:
            h.update(json.dumps(["d", d.doc_id, d.text], ensure_ascii=False).encode("utf-8"))
        for q in self.questions:
            h.update(json.dumps(["q", q.qid, q.text, q.relevant_doc_ids, q.answers], ensure_ascii=False).encode("utf-8"))
        return h.hexdigest()


def context_doc_id(context: str) -> str:
    """Stable content id for a context that has no id of its own: ``ctx-<sha1(context)[:16]>``."""
    return "ctx-" + hashlib.sha1(context.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- file access


def _check_file(path: Path | str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise LoaderError(f"{p}: QA file not found", path=p)
    return p


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise LoaderError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise LoaderError(f"{path}: not UTF-8 text ({exc.reason})", path=path) from exc


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("line N", object)`` for each non-blank line."""
    for n, obj in iter_jsonl(path):
        yield f"line {n}", obj


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow ships with datasets
        raise LoaderError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)", path=path) from exc
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types
        raise LoaderError(f"{path}: can't read Parquet: {exc}", path=path) from exc
    for i, row in enumerate(rows):
        yield f"row {i}", row


def _require(row: dict[str, Any], key: str, where: str, path: Any) -> Any:
    if key not in row or row[key] is None:
        raise LoaderError(f"{path}: {where}: missing field {key!r}", path=path, key=key)
    return row[key]


def _answer_texts(answers: Any) -> list[str]:
    """Answers as ``{"text": [...]}`` (HF) or ``[{"text": ...}]`` (official) -> list of strings."""
    if answers is None:
        return []
    if isinstance(answers, dict):
        texts = answers.get("text") or []
        return [str(t) for t in texts]
    return [str(a["text"]) for a in answers if isinstance(a, dict) and "text" in a]


# ---------------------------------------------------------------- shared builders


class _Builder:
    """Collects documents (deduplicated by id) and questions, then checks the result."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.docs: dict[str, Document] = {}
        self.questions: list[QAQuestion] = []
        self._qids: set[str] = set()

    def add_doc(self, doc_id: str, text: str, meta: dict[str, Any], where: str) -> None:
        old = self.docs.get(doc_id)
        if old is None:
            clean = {k: v for k, v in meta.items() if v is not None and v != ""}
            self.docs[doc_id] = Document(id_=doc_id, text=text, metadata=clean)
        elif old.text != text:
            raise LoaderError(f"{self.path}: {where}: document id {doc_id!r} is used for two different texts",
                              path=self.path, value=doc_id)

    def add_question(self, qid: str, text: str, rel: list[str], answers: list[str], meta: dict[str, Any], where: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise LoaderError(f"{self.path}: {where}: empty field 'question'", path=self.path, key="question")
        if qid in self._qids:
            raise LoaderError(f"{self.path}: {where}: duplicate question id {qid!r}", path=self.path, value=qid)
        self._qids.add(qid)
        clean = {k: v for k, v in meta.items() if v is not None and v != ""}
        self.questions.append(QAQuestion(qid=qid, text=text, relevant_doc_ids=rel, answers=answers, metadata=clean))

    def build(self, name: str) -> QASet:
        if not self.questions or not self.docs:
            raise LoaderError(f"{self.path}: empty QA set ({len(self.docs)} documents, {len(self.questions)} questions)",
                              path=self.path)
        qa = QASet(name=name, documents=list(self.docs.values()), questions=self.questions, source=str(self.path))
        logger.info("QA set %s: %d documents, %d questions", name, len(qa.documents), len(qa.questions))
        return qa


def _flat_rows_to_qaset(rows: Iterable[tuple[str, dict[str, Any]]], path: Any, name: str) -> QASet:
    """Flattened rows (HF ``klue/mrc`` or the shared subset with ``context_id``) -> QASet."""
    b = _Builder(path)
    for n, (where, row) in enumerate(rows):
        context = _require(row, "context", where, path)
        question = _require(row, "question", where, path)
        doc_id = str(row["context_id"]) if row.get("context_id") is not None else context_doc_id(context)
        b.add_doc(doc_id, context, {k: row.get(k) for k in _DOC_META_KEYS}, where)
        qid = str(row.get("guid") or row.get("id") or f"q{n:06d}")
        meta = {k: row.get(k) for k in _QUESTION_META_KEYS}
        b.add_question(qid, question, [doc_id], _answer_texts(row.get("answers")), meta, where)
    return b.build(name)


def _official_to_qaset(obj: Any, path: Path, name: str, doc_id_fn: Callable[[str, int, int, str], str]) -> QASet:
    """``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`` -> QASet.

    ``doc_id_fn(title, article_index, paragraph_index, context)`` names each paragraph.
    """
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise LoaderError(f"{path}: expected an object with a 'data' list (official/SQuAD layout)", path=path, key="data")
    b = _Builder(path)
    for ai, art in enumerate(data):
        title = art.get("title", "")
        art_meta = {k: art.get(k) for k in _DOC_META_KEYS}
        for pi, para in enumerate(_require(art, "paragraphs", f"data[{ai}]", path)):
            where = f"data[{ai}].paragraphs[{pi}]"
            context = _require(para, "context", where, path)
            doc_id = doc_id_fn(title, ai, pi, context)
            b.add_doc(doc_id, context, art_meta, where)
            for qi, qa in enumerate(para.get("qas") or []):
                qwhere = f"{where}.qas[{qi}]"
                question = _require(qa, "question", qwhere, path)
                qid = str(qa.get("guid") or qa.get("id") or f"{doc_id}-q{qi}")
                meta = {"question_type": qa.get("question_type"), "news_category": art.get("news_category"),
                        "is_impossible": qa.get("is_impossible")}
                b.add_question(qid, question, [doc_id], _answer_texts(qa.get("answers")), meta, qwhere)
    return b.build(name)


# ---------------------------------------------------------------- readers


def read_klue_mrc(path: Path | str) -> QASet:
    """Read KLUE MRC in any of its layouts, detected from the file.

    - official JSON ``{"data": [...]}``: doc id ``ctx-<sha1(context)[:16]>``;
    - flattened HF rows as a JSON list, JSONL or Parquet: doc id from the context hash;
    - the shared subset JSONL with ``context_id``: that id is the doc id.

    Impossible questions are kept (their context is still the relevant document); ``is_impossible``
    goes into the question metadata.
    """
    p = _check_file(path)
    name = f"klue_mrc:{p.name}"
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _flat_rows_to_qaset(_iter_jsonl(p), p, name)
    if suffix == ".parquet":
        return _flat_rows_to_qaset(_iter_parquet(p), p, name)
    obj = _load_json(p)
    if isinstance(obj, list):
        rows = []
        for i, row in enumerate(obj):
            if not isinstance(row, dict):
                raise LoaderError(f"{p}: row {i}: expected a JSON object, got {type(row).__name__}", path=p)
            rows.append((f"row {i}", row))
        return _flat_rows_to_qaset(rows, p, name)
    return _official_to_qaset(obj, p, name, lambda _t, _a, _p, ctx: context_doc_id(ctx))


def read_squad(path: Path | str, identical_contexts_relevant: bool = True) -> QASet:
    """Read SQuAD v1.1 JSON (KorQuAD 1.0): one document per paragraph, title from its article.

    Doc ids hash title, article/paragraph position and context, so paragraphs whose text repeats
    (KorQuAD dev has 3 such groups, 964 paragraphs / 961 texts) stay separate documents. With
    ``identical_contexts_relevant`` a question also counts every paragraph with the very same text as
    relevant (its own paragraph first), since no retriever can tell identical texts apart.
    """
    p = _check_file(path)

    def doc_id(title: str, ai: int, pi: int, ctx: str) -> str:
        key = f"{title}\x1f{ai}\x1f{pi}\x1f{ctx}"
        return "ctx-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]

    qa = _official_to_qaset(_load_json(p), p, f"squad:{p.name}", doc_id)
    if identical_contexts_relevant:
        by_text: dict[str, list[str]] = {}
        for d in qa.documents:
            by_text.setdefault(d.text, []).append(d.doc_id)
        text_of = {d.doc_id: d.text for d in qa.documents}
        dup = {t: ids for t, ids in by_text.items() if len(ids) > 1}
        if dup:
            logger.info("%s: %d texts shared by several paragraphs; all copies count as relevant", p.name, len(dup))
            qa.questions = [
                replace(q, relevant_doc_ids=[q.relevant_doc_ids[0]] + [i for i in dup[text_of[q.relevant_doc_ids[0]]]
                                                                      if i != q.relevant_doc_ids[0]])
                if text_of[q.relevant_doc_ids[0]] in dup else q
                for q in qa.questions
            ]
    return qa


def read_beir(corpus_path: Path | str, queries_path: Path | str, qrels_path: Path | str) -> QASet:
    """Read BEIR files: corpus JSONL (``_id``, ``title``, ``text``), queries JSONL (``_id``, ``text``),
    qrels TSV with a header (``query-id corpus-id score``); score > 0 is relevant.

    Only queries with at least one relevant document in the corpus are kept (BEIR practice).
    """
    cp, qp, rp = _check_file(corpus_path), _check_file(queries_path), _check_file(qrels_path)
    b = _Builder(cp)
    for where, row in _iter_jsonl(cp):
        doc_id = str(_require(row, "_id", where, cp))
        b.add_doc(doc_id, str(_require(row, "text", where, cp)), {"title": row.get("title")}, where)
    queries = {str(_require(r, "_id", w, qp)): str(_require(r, "text", w, qp)) for w, r in _iter_jsonl(qp)}
    rel: dict[str, list[str]] = {}
    dropped = 0
    with open(rp, encoding="utf-8", newline="") as fh:
        for n, cols in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not cols or (n == 1 and not _is_number(cols[-1])):
                continue  # blank line or header
            if len(cols) < 3:
                raise LoaderError(f"{rp}: line {n}: expected 'query-id<TAB>corpus-id<TAB>score', got {cols!r}", path=rp)
            try:
                score = float(cols[2])
            except ValueError as exc:
                raise LoaderError(f"{rp}: line {n}: score {cols[2]!r} is not a number", path=rp) from exc
            if score <= 0:
                continue
            if cols[1] not in b.docs:
                dropped += 1
                continue
            rel.setdefault(cols[0], []).append(cols[1])
    if dropped:
        logger.warning("%s: %d relevance judgements name documents missing from %s; ignored", rp, dropped, cp.name)
    if not b.docs:
        raise LoaderError(f"{cp}: empty corpus", path=cp)
    if not rel:
        raise LoaderError(f"{rp}: no relevance judgement with score > 0 for a document in {cp.name}", path=rp)
    for qid, doc_ids in rel.items():
        if qid not in queries:
            raise LoaderError(f"{rp}: query id {qid!r} is not in {qp}", path=rp, value=qid)
        b.add_question(qid, queries[qid], doc_ids, [], {}, f"query {qid}")
    return b.build(f"beir:{cp.parent.name or cp.stem}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_beir_dir(path: Path | str, split: str = "test") -> QASet:
    """BEIR folder layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    root = Path(path)
    return read_beir(root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv")


def load_hf_klue_mrc(split: str = "validation", dataset: str = "klue", subset: str = "mrc",
                     limit: int | None = None) -> QASet:
    """Load KLUE MRC from the Hugging Face hub via ``datasets.load_dataset`` (first ``limit`` rows).

    :raises LoaderError: ``datasets`` missing, or the hub/dataset can't be reached.
    """
    try:
        import datasets
    except ImportError as exc:
        raise LoaderError("loading from the hub needs the 'datasets' package (pip install datasets)") from exc
    src = f"hf://{dataset}/{subset}[{split}]"
    try:
        ds = datasets.load_dataset(dataset, subset, split=split)
    except Exception as exc:  # network, auth and not-found errors have no common base class
        raise LoaderError(
            f"{src}: can't load from the Hugging Face hub (unreachable or unknown dataset: {type(exc).__name__}: {exc}). "
            "Use a local file instead, e.g. read_qa_set('klue_mrc', 'klue_mrc_validation.jsonl')", path=src) from exc
    rows = ((f"row {i}", dict(r)) for i, r in enumerate(ds) if limit is None or i < limit)
    return _flat_rows_to_qaset(rows, src, f"hf_klue_mrc:{dataset}/{subset}:{split}")


def _hf_reader(path: Any = None, **kw: Any) -> QASet:
    if path not in (None, ""):
        raise EvaluationError(f"hf_klue_mrc reads from the hub and takes no path (got {path!r}); use kind 'klue_mrc' for a file")
    return load_hf_klue_mrc(**kw)


QA_READERS: dict[str, Callable[..., QASet]] = {
    "klue_mrc": read_klue_mrc,
    "squad": read_squad,
    "korquad": read_squad,
    "beir": _read_beir_dir,
    "hf_klue_mrc": _hf_reader,
}


def read_qa_set(kind: str, path: Path | str | None = None, **kw: Any) -> QASet:
    """Read a QA set with the reader registered under ``kind`` (see :data:`QA_READERS`)."""
    reader = QA_READERS.get(str(kind).lower())
    if reader is None:
        raise EvaluationError(f"unknown QA set kind {kind!r}; expected one of: {', '.join(sorted(QA_READERS))}",
                              key="kind", value=kind)
    return reader(path, **kw)
