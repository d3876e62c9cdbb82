"""Metadata filters: one evaluator for every retriever leg and store.

Our own rather than LlamaIndex's ``build_metadata_filter_fn``: that one rejects nested filters,
cannot match list-valued metadata with ``in`` and raises on a type mismatch.

Semantics (the same on BM25, TF-IDF/BoW, FAISS and the evaluation):

* a missing key matches only ``!=``, ``nin`` and ``is_empty``;
* a value of another type never matches (``"2024" > 3`` is simply false, on every leg);
* ``in`` / ``nin`` over list-valued metadata match when any element is (not) in the list;
* nested ``MetadataFilters`` and the ``and`` / ``or`` / ``not`` conditions are supported.
"""

from __future__ import annotations

import logging
import operator
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from ..core.errors import RetrievalError

logger = logging.getLogger(__name__)

__all__ = ["FilterIndex", "FilterSpec", "as_filters", "filter_keys", "matches", "metadata_mask", "warn_unknown_keys"]

FilterSpec = MetadataFilters | Mapping[str, Any] | None
"""What callers may pass: ``MetadataFilters``, a plain ``{key: value}`` dict (ANDed equality; a list value
means ``in``), or None."""


def _in(have: Any, want: Any) -> bool:
    return any(h in want for h in have) if isinstance(have, (list, tuple, set)) else have in want


_OPS: dict[FilterOperator, Callable[[Any, Any], bool]] = {
    FilterOperator.EQ: operator.eq,
    FilterOperator.NE: operator.ne,
    FilterOperator.GT: operator.gt,
    FilterOperator.GTE: operator.ge,
    FilterOperator.LT: operator.lt,
    FilterOperator.LTE: operator.le,
    FilterOperator.IN: _in,
    FilterOperator.NIN: lambda h, w: not _in(h, w),
    FilterOperator.CONTAINS: lambda h, w: w in h,
    FilterOperator.ANY: lambda h, w: any(v in h for v in w),
    FilterOperator.ALL: lambda h, w: all(v in h for v in w),
    FilterOperator.TEXT_MATCH: lambda h, w: isinstance(h, str) and str(w) in h,
    FilterOperator.TEXT_MATCH_INSENSITIVE: lambda h, w: isinstance(h, str) and str(w).lower() in h.lower(),
}


def as_filters(spec: FilterSpec) -> MetadataFilters | None:
    """``MetadataFilters`` from any accepted form; an empty dict or filter list is None."""
    if spec is None:
        return None
    if isinstance(spec, MetadataFilters):
        return spec if spec.filters else None
    if isinstance(spec, Mapping):
        if not spec:
            return None
        items = []
        for key, value in spec.items():
            op = FilterOperator.IN if isinstance(value, (list, tuple)) else FilterOperator.EQ
            items.append(MetadataFilter(key=str(key), value=list(value) if op == FilterOperator.IN else value, operator=op))
        return MetadataFilters(filters=items)
    raise RetrievalError(f"filters: expected MetadataFilters or a dict of key -> value, got {type(spec).__name__}", key="filters")


def warn_unknown_keys(spec: FilterSpec, known: frozenset[str] | set[str]) -> set[str]:
    """Log a warning naming each filtered key that no passage has (such a filter can only match nothing,
    or everything under ``!=``), with the keys that exist; returns the unknown keys."""
    unknown = filter_keys(as_filters(spec)) - set(known)
    if unknown:
        logger.warning("filter on %s: no passage has %s; known metadata keys: %s", ", ".join(sorted(unknown)),
                       "this key" if len(unknown) == 1 else "these keys", ", ".join(sorted(known)) or "(none)")
    return unknown


def filter_keys(filters: MetadataFilters | None) -> set[str]:
    """Every metadata key a filter tree names."""
    if filters is None:
        return set()
    out: set[str] = set()
    for f in filters.filters:
        out |= filter_keys(f) if isinstance(f, MetadataFilters) else {f.key}
    return out


def _match_one(f: MetadataFilter, metadata: Mapping[str, Any]) -> bool:
    op, have = FilterOperator(f.operator), metadata.get(f.key)
    if op == FilterOperator.IS_EMPTY:
        return have is None or have == "" or have == []
    fn = _OPS.get(op)
    if fn is None:
        raise RetrievalError(f"filter {f.key}: operator {op.value!r} is not supported", key=f.key, value=op.value)
    if have is None:
        return op in (FilterOperator.NE, FilterOperator.NIN)
    try:
        return bool(fn(have, f.value))
    except TypeError:  # e.g. '2024' > 3: a type mismatch never matches
        return False


def matches(filters: MetadataFilters, metadata: Mapping[str, Any]) -> bool:
    """True when ``metadata`` passes ``filters``."""
    hits = (matches(f, metadata) if isinstance(f, MetadataFilters) else _match_one(f, metadata) for f in filters.filters)
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return all(hits)
    if cond == FilterCondition.OR:
        return any(hits)
    if cond == FilterCondition.NOT:
        return not any(hits)
    raise RetrievalError(f"filter condition {cond!r} is not supported (and, or, not)", value=cond)


def metadata_mask(nodes: Sequence[BaseNode], filters: MetadataFilters | None) -> np.ndarray | None:
    """Boolean mask of ``nodes`` passing ``filters`` (None when there is nothing to filter)."""
    if filters is None or not filters.filters:
        return None
    return np.fromiter((matches(filters, n.metadata) for n in nodes), dtype=bool, count=len(nodes))


def _fast_terms(filters: MetadataFilters) -> list[tuple[str, FilterOperator, list[Any]]] | None:
    """(key, op, values) when ``filters`` is an AND of ``==`` / ``in`` on hashable scalars, else None."""
    if (filters.condition or FilterCondition.AND) != FilterCondition.AND:
        return None
    out = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters) or FilterOperator(f.operator) not in (FilterOperator.EQ, FilterOperator.IN):
            return None
        values = list(f.value) if FilterOperator(f.operator) == FilterOperator.IN else [f.value]
        if not all(isinstance(v, (str, int, float, bool)) for v in values):
            return None
        out.append((f.key, FilterOperator(f.operator), values))
    return out


class FilterIndex:
    """Row masks for filters over a fixed list of metadata dicts (row i = item i).

    The common case, ANDed ``==`` / ``in`` filters, is answered from a value -> rows map per key (built on first
    use of the key) instead of evaluating every row in Python; anything else falls back to ``matches``.
    Results equal ``metadata_mask`` exactly; the object is never changed after a key's map is built.
    """

    def __init__(self, items: Sequence[BaseNode] | Sequence[Mapping[str, Any]]) -> None:
        self._items = items
        self._cached: list[Mapping[str, Any]] | None = None  # built on the first filtered query, not per write
        self._maps: dict[tuple[str, bool], dict[Any, np.ndarray]] = {}

    @property
    def _metadata(self) -> list[Mapping[str, Any]]:
        if self._cached is None:
            self._cached = [getattr(i, "metadata", i) for i in self._items]
        return self._cached

    def _rows(self, key: str, listed: bool) -> dict[Any, np.ndarray]:
        """value -> rows holding it under ``key``; ``listed`` also indexes elements of list values (for ``in``)."""
        found = self._maps.get((key, listed))
        if found is None:
            acc: dict[Any, list[int]] = {}
            for row, md in enumerate(self._metadata):
                have = md.get(key)
                if isinstance(have, (list, tuple, set)):
                    if listed:
                        for v in have:
                            if isinstance(v, (str, int, float, bool)):
                                acc.setdefault(v, []).append(row)
                elif isinstance(have, (str, int, float, bool)):
                    acc.setdefault(have, []).append(row)
            found = {v: np.asarray(rows, dtype=np.int64) for v, rows in acc.items()}
            self._maps[(key, listed)] = found  # one atomic assignment: concurrent builders agree
        return found

    def mask(self, filters: MetadataFilters | None) -> np.ndarray | None:
        """Boolean mask of rows passing ``filters`` (None when there is nothing to filter)."""
        if filters is None or not filters.filters:
            return None
        terms = _fast_terms(filters)
        if terms is None:
            return np.fromiter((matches(filters, md) for md in self._metadata), dtype=bool, count=len(self._metadata))
        out = np.ones(len(self._metadata), dtype=bool)
        for key, op, values in terms:
            rows = self._rows(key, listed=op == FilterOperator.IN)
            hit = np.zeros(len(self._metadata), dtype=bool)
            for v in values:
                if v in rows:
                    hit[rows[v]] = True
            out &= hit
        return out
