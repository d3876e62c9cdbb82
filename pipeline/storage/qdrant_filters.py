"""Metadata filters as Qdrant ``Filter`` objects, built from structured values (never from strings).

The semantics follow ``retrieval.filters`` (the one evaluator of the local backend) wherever Qdrant can
express them: ``==`` / ``in`` on keywords, numbers and booleans, ``!=`` / ``nin`` (a point without the key
passes, as locally), ranges on numbers, ``is_empty``, ``text_match``, nested and/or/not. An operator Qdrant
cannot evaluate the same way raises ``RetrievalError`` naming it instead of filtering differently.
Metadata lives under the payload key ``metadata``.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from qdrant_client import models

from ..core.errors import RetrievalError

PAYLOAD_METADATA = "metadata"

_RANGE = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte", FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}


def _key(f: MetadataFilter) -> str:
    return f"{PAYLOAD_METADATA}.{f.key}"


def _match(value: Any, key: str) -> models.Match:
    if isinstance(value, (str, int, bool)) and not isinstance(value, float):
        return models.MatchValue(value=value)
    raise RetrievalError(f"filter {key}: a value of type {type(value).__name__} cannot be matched for equality on qdrant "
                         "(use strings, integers or booleans, or a range for floats)", key=key, value=value)


def _values(value: Any, key: str) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple, set)) else [value]
    if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        raise RetrievalError(f"filter {key}: 'in' / 'nin' on qdrant take a list of strings or integers", key=key, value=value)
    if len({type(v) for v in values}) > 1:
        raise RetrievalError(f"filter {key}: 'in' / 'nin' on qdrant take values of one type", key=key, value=value)
    return values


def _condition(f: MetadataFilter) -> tuple[str, models.Condition]:
    """("must" | "must_not", condition) for one filter."""
    op, key = FilterOperator(f.operator), _key(f)
    if op == FilterOperator.EQ:
        if isinstance(f.value, float):
            return "must", models.FieldCondition(key=key, range=models.Range(gte=f.value, lte=f.value))
        return "must", models.FieldCondition(key=key, match=_match(f.value, f.key))
    if op == FilterOperator.NE:
        return "must_not", models.FieldCondition(key=key, match=_match(f.value, f.key))
    if op == FilterOperator.IN:
        return "must", models.FieldCondition(key=key, match=models.MatchAny(any=_values(f.value, f.key)))
    if op == FilterOperator.NIN:
        return "must_not", models.FieldCondition(key=key, match=models.MatchAny(any=_values(f.value, f.key)))
    if op in _RANGE:
        if not isinstance(f.value, (int, float)) or isinstance(f.value, bool):
            raise RetrievalError(f"filter {f.key}: {op.value!r} on qdrant compares numbers, got {f.value!r}", key=f.key, value=f.value)
        return "must", models.FieldCondition(key=key, range=models.Range(**{_RANGE[op]: f.value}))
    if op == FilterOperator.IS_EMPTY:
        return "must", models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
    if op == FilterOperator.CONTAINS:  # a list-valued key holding the value
        return "must", models.FieldCondition(key=key, match=_match(f.value, f.key))
    if op == FilterOperator.TEXT_MATCH and isinstance(f.value, str):
        return "must", models.FieldCondition(key=key, match=models.MatchText(text=f.value))
    raise RetrievalError(f"filter {f.key}: operator {op.value!r} is not supported on storage.backend qdrant "
                         "(supported: ==, !=, in, nin, >, >=, <, <=, contains, is_empty, text_match)", key=f.key, value=op.value)


def to_qdrant(filters: MetadataFilters | None) -> models.Filter | None:
    """The Qdrant ``Filter`` equal to ``filters`` (None for none)."""
    if filters is None or not filters.filters:
        return None
    parts: list[tuple[str, models.Condition]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            nested = to_qdrant(f)
            if nested is not None:
                parts.append(("must", nested))
        else:
            parts.append(_condition(f))
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return models.Filter(must=[c for kind, c in parts if kind == "must"] or None,
                             must_not=[c for kind, c in parts if kind == "must_not"] or None)
    wrapped = [c if kind == "must" else models.Filter(must_not=[c]) for kind, c in parts]
    if cond == FilterCondition.OR:
        return models.Filter(should=wrapped)
    if cond == FilterCondition.NOT:
        return models.Filter(must_not=wrapped)
    raise RetrievalError(f"filter condition {cond!r} is not supported (and, or, not)", value=cond)
