"""The configuration reference (``docs/config.md``), generated from the pydantic schema so it cannot drift.

    python -m pipeline.config.reference > docs/config.md      # a test checks the file is current
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .evaluation import EvalConfig
from .schema import BM25Config, Config, DenseConfig, SparseVectorConfig

_HEADER = """# Configuration reference

Generated from the pydantic schema (`pipeline/config/schema.py`, `storage.py`, `evaluation.py`) by
`python -m pipeline.config.reference > docs/config.md`; `tests/unit/test_config.py` fails when it is out of date.
Every section forbids unknown keys. Relative paths resolve against the config file's folder. Any key can be
overridden on the command line with `--set KEY=VALUE` (e.g. `--set retrieval.top_k=10`).
"""

_RETRIEVERS = (("bm25", BM25Config), ("tfidf | bow", SparseVectorConfig), ("dense", DenseConfig))


def _type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``str | null``, ``list[str]``, ``bm25 | tfidf``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "(section)" if isinstance(value, BaseModel) else f"`{_plain(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{_plain(field.default)}`"


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return value


def _limits(field: FieldInfo) -> str:
    names = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min items", "max_length": "max items"}
    out = []
    for meta in field.metadata:
        for attr, sign in names.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return ", ".join(out)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The nested section a field holds (``X`` or ``X | None``), if any."""
    candidates = [field.annotation, *typing.get_args(field.annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _tables(model: type[BaseModel], prefix: str, title: str | None = None) -> Iterator[str]:
    """One Markdown table for ``model``'s own keys, then one per nested section."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        if name == "base_dir":  # set by the loader, not by users
            continue
        key = f"{prefix}{name}"
        sub = _section_model(field)
        if sub is not None:
            nested.append((key, sub, None))
        if key == "retrieval.retrievers":
            nested.extend((f"{key}[]", cls, f"{key}[] with type: {kind}") for kind, cls in _RETRIEVERS)
        limits = _limits(field)
        desc = _cell(field.description or (f"see `{key}` below" if sub is not None else ""))
        desc += f" ({limits})" if limits else ""
        rows.append(f"| `{key}` | {_cell(_type_name(field.annotation))} | {_default(field)} | {desc} |")
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ and model is not Config else ""
    yield f"\n## `{title or prefix.rstrip('.') or '(top level)'}`\n" + (f"\n{doc}\n" if doc else "")
    yield "\n| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    for key, sub, sub_title in nested:
        yield from _tables(sub, key + ".", sub_title and sub_title)


def reference_markdown() -> str:
    """The whole reference: the pipeline config, then the evaluation config."""
    parts = [_HEADER, "\n# Pipeline config (`configs/*.yaml`)\n"]
    parts += list(_tables(Config, ""))
    parts.append("\n# Evaluation config (`configs/eval/*.yaml`)\n\nKeys under the one top-level key `evaluation:`.\n")
    parts += list(_tables(EvalConfig, "evaluation."))
    return "".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
