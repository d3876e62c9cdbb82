"""HTTP service: FastAPI over one ``Pipeline`` (``ragpipe serve -c CONFIG``).

    POST   /retrieve             {query, top_k?, filters?}         ranked passages
    POST   /query                {query, top_k?, filters?, stream?} answer + sources (SSE when stream)
    POST   /documents            {documents: [{doc_id, text, metadata?}]}  upsert, logged (fsync) before the reply
    DELETE /documents            {doc_ids: [...]}                  delete, logged before the reply
    DELETE /documents/{doc_id}   (ids may contain slashes)          delete one
    GET    /documents?offset&limit                                  ids and content hashes, paged
    GET    /health                                                  liveness (never needs a key)
    GET    /info                                                    model, index size, config fingerprint
    GET    /docs, /redoc, /openapi.json                             OpenAPI (assets served locally: works offline)

Endpoints are sync functions, so FastAPI runs retrieval in its threadpool, in parallel and without a
lock; concurrent query embeddings share micro-batches. A write changes only the documents it names,
is logged before the reply, and is served as a new snapshot swapped in by reference; queries in flight
finish on the old one. Writes by other processes (``ragpipe ingest``) are picked up by polling. Set ``RAGPIPE_API_KEY`` to require ``X-API-Key: KEY`` or
``Authorization: Bearer KEY`` on everything except ``/health`` and the OpenAPI pages.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .api_models import (MAX_DOCUMENTS_PER_REQUEST, DeleteRequest, DeleteResponse, DocumentsPage, Health, Info, QueryRequest,
                         QueryResponse, RetrieveRequest, RetrieveResponse, UpsertRequest, UpsertResponse)
from .pipeline import Pipeline
from ..core.errors import ConfigError, IndexStateError, RagpipeError, RetrievalError

logger = logging.getLogger(__name__)

API_KEY_ENV = "RAGPIPE_API_KEY"
MAX_BODY_BYTES = 1_000_000
_FROM_CONFIG: Any = object()


# --------------------------------------------------------------------------- helpers


def _hits(nodes: list[Any]) -> list[dict[str, Any]]:
    from .engine import source_dicts

    return source_dicts(nodes)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _rss_mb() -> float | None:
    """This process's resident memory in MiB (Linux ``/proc``; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _status_for(exc: RagpipeError) -> int:
    from .engine import LLMError

    if isinstance(exc, LLMError):
        return 502
    if isinstance(exc, IndexStateError):
        return 503
    if isinstance(exc, RetrievalError):
        return 404 if exc.key == "doc_id" and str(exc).startswith("unknown document") else 400
    if isinstance(exc, ConfigError):
        return 500
    return 500


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413 (by Content-Length, or counted when chunked)."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = f"request body over the {self.max_bytes} byte limit; send fewer documents per request"
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await self._reject(send, 400, "invalid Content-Length header")
                return
            if size > self.max_bytes:
                await self._reject(send, 413, too_big)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit, then replay the body to the app.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._reject(send, 413, too_big)
                return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _auth_dependency(api_key: str | None) -> Any:
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description=f"Required when {API_KEY_ENV} is set")
    bearer = HTTPBearer(auto_error=False, description="Alternative to X-API-Key")
    expected = api_key.encode() if api_key else None

    def check(key: Optional[str] = Depends(header), creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if expected is None:
            return
        given = key or (creds.credentials if creds is not None else None)
        if not given or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(status_code=401, detail="missing or wrong API key: send X-API-Key or Authorization: Bearer",
                                headers={"WWW-Authenticate": "Bearer"})

    return check



# --------------------------------------------------------------------------- app


def create_app(pipeline: Pipeline, *, llm: Any = _FROM_CONFIG, api_key: str | None = _FROM_CONFIG,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app over ``pipeline`` (loaded here, so a missing index fails at startup).

    :param llm: LLM for ``/query``; default: ``build_llm(config.llm)`` (None = retrieval only).
    :param api_key: required key; default: the ``RAGPIPE_API_KEY`` environment variable (unset = open).
    :param max_body_bytes: larger request bodies get 413.
    """
    from ..core.progress import disable_progress
    from .engine import answer_with_sources
    from ..models.llm import build_llm

    disable_progress()
    pipeline.show_progress = False
    pipeline.batch_queries()
    pipeline.load()
    if llm is _FROM_CONFIG:
        llm = build_llm(pipeline.config.llm)
    if api_key is _FROM_CONFIG:
        api_key = os.environ.get(API_KEY_ENV) or None
    auth = Depends(_auth_dependency(api_key))

    from ..core.versions import __version__

    from fastapi_offline import FastAPIOffline  # /docs and /redoc from bundled assets: no CDN, works offline

    app = FastAPIOffline(title="ragpipe", version=__version__,
                  description="Korean-first hybrid retrieval (BM25 over morphemes + dense, fused) with optional LLM answers.")
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.state.pipeline = pipeline
    app.state.llm = llm

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems),
                                                      "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]})

    @app.exception_handler(RagpipeError)
    async def _ragpipe_error(request: Request, exc: RagpipeError) -> JSONResponse:
        status = _status_for(exc)
        if status >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=status, content={"detail": str(exc), "key": exc.key})

    @app.get("/health", tags=["service"], response_model=Health, response_model_exclude_unset=True)
    def health() -> dict[str, Any]:
        """Liveness: the process is up and an index is loaded; follows writes by other processes. Needs no key."""
        try:
            pipeline.refresh()
        except RagpipeError as exc:  # keep serving the last good snapshot, and say why
            logger.error("could not follow the index on disk: %s", exc)
            return {"status": "degraded", "index_loaded": pipeline.loaded, "detail": str(exc)}
        return {"status": "ok", "index_loaded": pipeline.loaded}

    @app.get("/info", tags=["service"], dependencies=[auth], response_model=Info)
    def info() -> dict[str, Any]:
        """Model, index size, retrievers and config fingerprint. No secrets."""
        out = dict(pipeline.info())
        cfg = pipeline.config
        out["top_k_default"] = cfg.retrieval.top_k
        out["rerank"] = {"enabled": cfg.rerank.enabled, "model": cfg.rerank.model if cfg.rerank.enabled else None}
        out["llm"] = {"provider": cfg.llm.provider.value, "model": cfg.llm.model, "base_url": cfg.llm.base_url} if llm is not None else None
        out["version"] = __version__
        out["auth"] = api_key is not None
        out["rss_mb"] = _rss_mb()
        return out

    @app.post("/retrieve", tags=["query"], dependencies=[auth], response_model=RetrieveResponse)
    def retrieve(req: RetrieveRequest) -> dict[str, Any]:
        """Ranked passages (doc_id, node_id, score, text, metadata) for a query."""
        t0 = time.perf_counter()
        hits = pipeline.retrieve(req.query, top_k=req.top_k, filters=req.filters)
        logger.debug("retrieve %r -> %d hits", req.query, len(hits))
        return {"query": req.query, "latency_ms": (time.perf_counter() - t0) * 1000, "results": _hits(hits)}

    @app.post("/query", tags=["query"], dependencies=[auth], response_model=QueryResponse,
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "JSON, or with stream: server-sent events sources, token..., done (or error)"}})
    def query(req: QueryRequest) -> Any:
        """An answer with its sources (retrieval-only when no LLM is configured). ``stream`` gives SSE."""
        t0 = time.perf_counter()
        engine = pipeline.as_query_engine(llm=llm, streaming=req.stream and llm is not None, top_k=req.top_k, filters=req.filters)
        response = engine.query(req.query)
        if not req.stream:
            out = answer_with_sources(response)
            out.update(query=req.query, latency_ms=(time.perf_counter() - t0) * 1000)
            return out
        return StreamingResponse(_stream(response, t0), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _stream(response: Any, t0: float) -> Iterator[str]:
        sources = _hits(list(response.source_nodes or []))
        yield _sse("sources", {"sources": sources})
        gen = getattr(response, "response_gen", None)
        parts: list[str] = []
        try:
            if gen is not None:
                for token in gen:
                    parts.append(token)
                    yield _sse("token", {"delta": token})
            answer = "".join(parts) if gen is not None else None
        except RagpipeError as exc:
            logger.error("streamed answer failed: %s", exc)
            yield _sse("error", {"detail": str(exc), "status": _status_for(exc)})
            return
        yield _sse("done", {"answer": answer, "mode": "llm" if gen is not None else "retrieval_only",
                            "latency_ms": (time.perf_counter() - t0) * 1000})

    @app.post("/documents", tags=["documents"], dependencies=[auth], response_model=UpsertResponse)
    def upsert(req: UpsertRequest) -> dict[str, Any]:
        """Add or replace documents by doc_id; persisted (atomic swap) before the reply."""
        from dataclasses import asdict

        from llama_index.core import Document

        docs = [Document(text=d.text, id_=d.doc_id, metadata={**d.metadata, "doc_id": d.doc_id}) for d in req.documents]
        report = pipeline.upsert(docs)
        logger.info("upserted %d documents (index now %d documents)", len(docs), report.documents)
        return {"upserted": [d.doc_id for d in req.documents], "report": asdict(report)}

    @app.get("/documents", tags=["documents"], dependencies=[auth], response_model=DocumentsPage)
    def list_documents(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=MAX_DOCUMENTS_PER_REQUEST)) -> dict[str, Any]:
        """Document ids and content hashes, sorted by id and paged, so an app can sync its copy."""
        page = pipeline.document_hashes()
        ids = sorted(page)
        return {"total": len(ids), "offset": offset,
                "documents": [{"doc_id": i, "sha256": page[i]} for i in ids[offset : offset + limit]]}

    def _delete(ids: list[str]) -> dict[str, Any]:
        from dataclasses import asdict

        try:
            report = pipeline.delete(ids)
        except RetrievalError as exc:
            if str(exc).startswith("refusing"):
                raise HTTPException(status_code=409, detail=str(exc)) from exc
            raise
        logger.info("deleted %d document(s) (index now %d documents)", len(ids), report.documents)
        return {"deleted": ids, "report": asdict(report)}

    @app.delete("/documents", tags=["documents"], dependencies=[auth], response_model=DeleteResponse)
    def delete_many(req: DeleteRequest) -> dict[str, Any]:
        """Remove documents by id, all or none; persisted before the reply. An unknown id: 404."""
        return _delete(req.doc_ids)

    @app.delete("/documents/{doc_id:path}", tags=["documents"], dependencies=[auth], response_model=DeleteResponse)
    def delete(doc_id: str) -> dict[str, Any]:
        """Remove one document (ids with slashes, like ``hr/welfare.md``, work as they are); persisted before the reply."""
        return _delete([doc_id])

    return app


def serve(config: str | Path, overrides: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", access_log: bool = True) -> None:
    """Load the index named by ``config`` and serve it with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover
        raise ConfigError("ragpipe serve needs uvicorn: pip install uvicorn fastapi") from exc
    pipeline = Pipeline.from_config(config, overrides or [], show_progress=False)
    app = create_app(pipeline)
    _follow(pipeline)
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(API_KEY_ENV):
        logger.warning("serving on %s without an API key; set %s to require one", host, API_KEY_ENV)
    logger.info("serving %s (%s) on http://%s:%d (docs at /docs)", pipeline.config.name, pipeline.index_path, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)


def _follow(pipeline: Pipeline) -> None:
    """Poll the index folder every ``serving.poll_seconds`` for writes by other processes (a daemon thread)."""
    import threading

    def loop() -> None:
        while True:
            time.sleep(pipeline.config.serving.poll_seconds)
            try:
                if pipeline.refresh():
                    logger.info("now serving %s", pipeline.info().get("version"))
            except Exception as exc:  # noqa: BLE001 - keep serving the last good snapshot
                logger.error("could not follow the index on disk: %s", exc)

    threading.Thread(target=loop, name="ragpipe-index-follower", daemon=True).start()
