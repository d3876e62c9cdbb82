"""File readers the folder loader adds to LlamaIndex's ``SimpleDirectoryReader`` defaults.

- HTML: main text through trafilatura (boilerplate, ``<nav>``, ``<script>`` and ``<style>`` dropped), title as metadata.
  LlamaIndex's ``HTMLTagReader`` keeps every tag's text, navigation included, so it is not used.
- HWPX (Hangul's zip + XML format): paragraph text through python-hwpx, which LlamaIndex has no reader for.

``.docx`` and ``.hwp`` go to LlamaIndex's own ``DocxReader`` (docx2txt) and ``HWPReader`` (olefile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core import Document
from llama_index.core.readers.base import BaseReader


class HtmlMainTextReader(BaseReader):
    """An HTML file's main text (trafilatura, favouring precision) and its title."""

    def load_data(self, file: Path, extra_info: dict[str, Any] | None = None, fs: Any = None) -> list[Document]:
        import trafilatura

        raw = Path(file).read_bytes()  # bytes: trafilatura reads the page's declared charset (UTF-8, EUC-KR, ...)
        text = trafilatura.extract(raw, favor_precision=True, include_tables=True, include_comments=False)
        if not text:  # no main block found (e.g. a bare fragment): the page's visible text, markup still dropped
            text = trafilatura.html2txt(raw)
        meta = trafilatura.extract_metadata(raw)
        title = (meta.title or "").strip() if meta is not None else ""
        return [Document(text=text or "", metadata={**(extra_info or {}), **({"title": title} if title else {})})]


class HwpxReader(BaseReader):
    """A ``.hwpx`` file's paragraphs, one per line."""

    def load_data(self, file: Path, extra_info: dict[str, Any] | None = None, fs: Any = None) -> list[Document]:
        from hwpx import TextExtractor

        with TextExtractor(Path(file)) as extractor:
            text = extractor.extract_text()
        return [Document(text=text, metadata=dict(extra_info or {}))]


def file_extractors() -> dict[str, BaseReader]:
    """Suffix -> reader, merged over ``SimpleDirectoryReader``'s defaults."""
    html = HtmlMainTextReader()
    return {".html": html, ".htm": html, ".hwpx": HwpxReader()}
