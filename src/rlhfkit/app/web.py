"""The labelling web page and its JSON API (FastAPI), over a :class:`~rlhfkit.feedback.store.Store`.

Routes::

    GET  /label?token=T   the page (a labeller's personal URL)
    POST /api/next        claim the next query: {wait_s?}   (X-Label-Token header; wait_s: long poll)
    POST /api/label       answer it: {query_id, show_id, outcome, ranking?, reason?, next?}
    POST /api/undo        retract your last answer and show its query again
    GET  /api/progress    counts for the progress display
    GET  /media/PATH      a clip from the store's media folder (token in header or ?token=)
    GET  /static/...      the page's JS and CSS (served locally: no CDN)
    GET  /healthz         liveness

Security: every route but ``/``, ``/static`` and ``/healthz`` needs a labeller token, checked in
constant time (:meth:`Store.labeller_for_token`); state changes only by POST with the token in
a header (so a foreign site cannot forge them); JSON bodies over ``max_body_bytes`` are refused
with 413; media are served only from the media folder (no ``..``, no symlink escapes, only
video and image types); responses carry a strict Content-Security-Policy and
``Referrer-Policy: no-referrer`` (the token is in the page URL). Every error is a JSON
``{"error": message}`` and writes nothing: 4xx for a bad request (malformed or deeply nested JSON,
ids no row can have, text a database cannot store, ...), 503 when the database does not answer
or stays contended through every retry, 500 only for a bug.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhfkit.feedback.store import PAIR_OUTCOMES, RANKING, Labeller, Store, StoreError, check_media_path
from rlhfkit.feedback.store.types import short

__all__ = ["DEFAULT_GUIDELINES", "MAX_BODY_BYTES", "create_app"]

HERE = Path(__file__).parent
log = logging.getLogger("rlhfkit.app")
MAX_BODY_BYTES = 16 * 1024
"""Largest accepted request body; an answer is well under 1 KiB."""

MAX_WAIT_S = 30.0
"""Longest long poll of ``/api/next`` (the page re-polls when it ends)."""
POLL_S = 0.5
"""How often a long poll looks in the database for queries posted by another process (queries
posted in this process are seen within 20 ms)."""

MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".gif": "image/gif", ".png": "image/png",
               ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

DEFAULT_GUIDELINES = """\
Which of the two is better at the task?
• Watch both clips for a loop or two, then answer. Judge the whole clip, not one moment.
• Tie (↓ or 3): both are about equally good. Both bad (b): neither does anything useful.
• Can't tell (c): you cannot compare them (e.g. they do different, incomparable things).
• Skip (s): you would rather not answer. Undo (u) takes back your last answer.
Your answers are saved the moment you give them."""

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                 b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class _Guard:
    """ASGI middleware: refuse bodies larger than ``limit`` (413) and add the security headers."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _error(413, f"request body too large (limit {self.limit} bytes)")(scope, receive, send)
                    return
        is_static = scope.get("path", "").startswith(("/static/", "/media/"))

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if not (is_static and h[0] == b"cache-control")]
                extra = [h for h in SECURITY_HEADERS if not (is_static and h[0] == b"cache-control")]
                if is_static:
                    extra.append((b"cache-control", b"private, max-age=3600"))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Reject(413, f"request body too large (limit {limit} bytes)")
    if not body.strip():
        return {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise _Reject(415, f"send JSON with Content-Type: application/json (got {ctype or 'none'!r})")
    try:
        obj = json.loads(body)
    except RecursionError:
        raise _Reject(400, "malformed JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
        raise _Reject(400, f"malformed JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise _Reject(400, "the JSON body must be an object")
    return obj


def _int_field(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    if v is None:
        raise _Reject(422, f"missing field {key!r} (an integer)")
    if not isinstance(v, int) or isinstance(v, bool):
        raise _Reject(422, f"field {key!r} must be an integer, got {short(v)}")
    return v  # the store answers 404 for an integer no row can have (0, -1, 2**63, ...)


def create_app(store: Store, *, guidelines: str | None = None, title: str = "rlhfkit · labelling",
               max_body_bytes: int = MAX_BODY_BYTES,
               run_status: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    """Build the labelling app over ``store``.

    Args:
        store: where queries come from and answers go.
        guidelines: the text of the guidelines panel (plain text; escaped); default
            :data:`DEFAULT_GUIDELINES`.
        title: the page title.
        max_body_bytes: the request size limit (413 above it).
        run_status: what the training run is doing (``{"state", "labelled", "budget"}``, see
            :meth:`rlhfkit.feedback.human.HumanTeacher.status`), sent with every answer so the
            page can show the label budget, say when the agent is training, and stop at the end.

    Returns:
        The ASGI app (serve it with uvicorn, or :func:`rlhfkit.app.start_server`).
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.closing = threading.Event()  # set by ServerHandle.stop(): long polls end at once
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    guidelines_text = guidelines if guidelines is not None else DEFAULT_GUIDELINES
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def run_info() -> dict[str, Any] | None:
        if run_status is None:
            return {"state": "finished"} if app.state.closing.is_set() else None
        info = dict(run_status())
        if app.state.closing.is_set():
            info["state"] = "finished"
        return info

    @app.exception_handler(_Reject)
    async def _on_reject(_: Request, e: _Reject) -> JSONResponse:
        return _error(e.status, e.message)

    @app.exception_handler(StoreError)
    async def _on_store_error(_: Request, e: StoreError) -> JSONResponse:
        return _error(e.status, str(e))

    @app.exception_handler(sa.exc.OperationalError)
    async def _on_database_down(_: Request, e: sa.exc.OperationalError) -> JSONResponse:
        log.warning("database error: %s", str(e).splitlines()[0][:300])
        return _error(503, "the database is not answering; nothing was saved: try again in a moment")

    @app.exception_handler(Exception)
    async def _on_bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, f"internal error ({type(e).__name__}); nothing was saved")

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = {404: "not found", 405: "method not allowed: state changes only by POST"}.get(e.status_code, str(e.detail))
        return _error(e.status_code, msg)

    def labeller(request: Request, *, allow_query: bool = False, query_only: bool = False) -> Labeller:
        token = None if query_only else request.headers.get("x-label-token")
        if not token and (allow_query or query_only):
            token = request.query_params.get("token")
        if not token:
            raise _Reject(401, "missing labeller token: open your personal labelling URL (…/label?token=…); "
                               "API calls send it in the X-Label-Token header")
        lab = store.labeller_for_token(token)
        if lab is None:
            raise _Reject(403, "unknown labeller token: check the URL you were given")
        return lab

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        html = templates.get_template("message.html").render(
            title=title, heading="rlhfkit labelling",
            message="Open the personal labelling URL you were given (it ends in /label?token=…). "
                    "`rlhf label serve` prints one; `rlhf label add-labeller NAME` makes one per person.")
        return HTMLResponse(html)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/label", response_class=HTMLResponse)
    async def page(request: Request) -> HTMLResponse:
        try:
            lab = labeller(request, query_only=True)
        except _Reject as e:
            html = templates.get_template("message.html").render(title=title, heading="Cannot open the page",
                                                                 message=e.message)
            return HTMLResponse(html, status_code=e.status)
        html = templates.get_template("label.html").render(
            title=title, token=request.query_params.get("token", ""), labeller=lab.name, guidelines=guidelines_text,
            outcomes=PAIR_OUTCOMES)
        return HTMLResponse(html)

    @app.post("/api/next")
    async def api_next(request: Request) -> JSONResponse:
        lab = labeller(request)
        obj = await _json_body(request, max_body_bytes)
        wait_s = obj.get("wait_s", 0)
        if not isinstance(wait_s, (int, float)) or isinstance(wait_s, bool) or not 0 <= wait_s <= MAX_WAIT_S:  # NaN too
            raise _Reject(422, f"field 'wait_s' must be a number of seconds in [0, {MAX_WAIT_S}]")
        deadline = time.monotonic() + wait_s

        # claim and count in the store's writer transaction, awaited without a worker thread: the
        # hot path runs on two threads (event loop, writer) whatever the number of labellers
        shown, progress = await store.claim_async(lab.id)
        closing, seen, checked = app.state.closing, store.version, time.monotonic()
        while shown is None and time.monotonic() < deadline and not closing.is_set():  # long poll
            await asyncio.sleep(0.02)
            # look again when this process posted queries, and every POLL_S for other processes
            if store.version != seen or time.monotonic() - checked >= POLL_S:
                seen, checked = store.version, time.monotonic()
                if await run_in_threadpool(store.has_waiting, lab.id):
                    shown, progress = await store.claim_async(lab.id)
        return JSONResponse({"query": shown.to_json() if shown else None, "progress": progress, "run": run_info()})

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.post("/api/label")
    async def api_label(request: Request) -> JSONResponse:
        lab = labeller(request)
        obj = await _json_body(request, max_body_bytes)
        query_id, show_id = _int_field(obj, "query_id"), _int_field(obj, "show_id")
        outcome = obj.get("outcome")
        if not isinstance(outcome, str) or outcome.upper() not in (*PAIR_OUTCOMES, RANKING):
            raise _Reject(422, f"invalid outcome {short(outcome)}; expected one of "
                               f"{', '.join((*PAIR_OUTCOMES, RANKING))}")
        ranking = obj.get("ranking")
        if ranking is not None and not (isinstance(ranking, list) and len(ranking) <= 16
                                        and all(isinstance(p, int) and not isinstance(p, bool) for p in ranking)):
            raise _Reject(422, "field 'ranking' must be a list of display positions (integers), best first")
        reason = obj.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _Reject(422, "field 'reason' must be a string")
        want_next = obj.get("next", False)
        if not isinstance(want_next, bool):
            raise _Reject(422, "field 'next' must be true or false")
        res = await store.submit_label_async(lab.id, query_id, show_id, outcome, ranking=ranking, reason=reason,
                                             want_next=want_next)
        out: dict[str, Any] = {"label_id": res.label.id, "duplicate": res.duplicate, "progress": res.progress,
                               "run": run_info()}
        if want_next:
            out["query"] = res.next.to_json() if res.next else None
        return JSONResponse(out)

    @app.post("/api/undo")
    async def api_undo(request: Request) -> dict[str, Any]:
        lab = labeller(request)
        await _json_body(request, max_body_bytes)
        undone, shown = await run_in_threadpool(store.undo_last, lab.id)
        progress = await run_in_threadpool(store.progress, lab.id)
        return {"undone_label_id": undone.id, "query": shown.to_json(), "progress": progress, "run": run_info()}

    @app.get("/api/progress")
    async def api_progress(request: Request) -> dict[str, Any]:
        lab = labeller(request)
        return {"progress": await run_in_threadpool(store.progress, lab.id), "labeller": lab.name, "run": run_info()}

    @app.get("/media/{path:path}")
    async def media(path: str, request: Request) -> Response:
        labeller(request, allow_query=True)
        try:
            rel = check_media_path(path)
        except StoreError:
            raise _Reject(400, "bad media path: it must lie inside the media folder (no '..', not absolute)") from None
        root = store.media_dir.resolve()
        full = (root / rel).resolve()
        if not full.is_relative_to(root):
            raise _Reject(400, "bad media path: it must lie inside the media folder")
        kind = MEDIA_TYPES.get(full.suffix.lower())
        if kind is None or not full.is_file():
            raise _Reject(404, f"no such media file: {rel}")
        return FileResponse(full, media_type=kind)

    app.add_middleware(_Guard, limit=max_body_bytes)
    return app
