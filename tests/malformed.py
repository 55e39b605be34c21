"""Malformed requests to the labelling API, each with the 4xx it must get (and the store must not change).

Used by tests/test_app.py on both backends and by ``bench/label_server.py --malformed``. Each
entry is ``(name, method, path, httpx keyword arguments, status, text the JSON error contains)``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["malformed_requests"]

Request = tuple[str, str, str, dict[str, Any], int, str]


def malformed_requests(token: str, good: dict[str, Any], other_query: int, others_show: int) -> list[Request]:
    """The requests, built around a valid answer ``good`` (``query_id``, ``show_id``, ``outcome``).

    Args:
        token: a valid labeller token (the requests that need one carry it in X-Label-Token).
        good: a valid answer of this labeller to a query shown to them (never sent as is).
        other_query: another query's id (whose showing ``good["show_id"]`` is not).
        others_show: a showing of ``good["query_id"]`` to another labeller.
    """
    h = {"X-Label-Token": token, "Content-Type": "application/json"}

    def body(obj: Any) -> dict[str, Any]:
        return {"content": obj if isinstance(obj, bytes) else json.dumps(obj).encode(), "headers": h}

    def raw(text: str) -> dict[str, Any]:
        return {"content": text.encode("utf-8", "surrogatepass"), "headers": h}

    def answer(**change: Any) -> dict[str, Any]:
        return body({**good, **change})

    def without(key: str) -> dict[str, Any]:
        return body({k: v for k, v in good.items() if k != key})

    q, s = good["query_id"], good["show_id"]
    label, nxt, undo = "/api/label", "/api/next", "/api/undo"
    return [
        # the body: not JSON, not an object, too big, too deep
        ("truncated JSON", "POST", label, raw('{"query_id": 1,'), 400, "malformed JSON"),
        ("trailing garbage", "POST", label, raw(json.dumps(good) + "}"), 400, "malformed JSON"),
        ("form-encoded body", "POST", label, {"content": b"outcome=LEFT", "headers": {
            **h, "Content-Type": "application/x-www-form-urlencoded"}}, 415, "JSON"),
        ("JSON as text/plain", "POST", label, {"content": json.dumps(good).encode(), "headers": {
            **h, "Content-Type": "text/plain"}}, 415, "JSON"),
        ("no content type", "POST", label, {"content": json.dumps(good).encode(), "headers": {
            "X-Label-Token": token}}, 415, "JSON"),
        ("a JSON array", "POST", label, body([good]), 400, "must be an object"),
        ("a JSON string", "POST", label, body("LEFT"), 400, "must be an object"),
        ("a JSON number", "POST", label, body(7), 400, "must be an object"),
        ("JSON null", "POST", label, body(None), 400, "must be an object"),
        ("arrays 5,000 deep", "POST", label, raw("[" * 5000 + "]" * 5000), 400, "nested too deeply"),
        ("objects 2,500 deep", "POST", label, raw('{"a":' * 2500 + "1" + "}" * 2500), 400, "nested too deeply"),
        ("a 5,000-digit number", "POST", label, raw('{"query_id": ' + "9" * 5000 + "}"), 400, "malformed JSON"),
        ("invalid UTF-8", "POST", label, {"content": b'{"reason": "\xff\xfe"}', "headers": h}, 400, "malformed JSON"),
        ("oversized body", "POST", label, answer(reason="x" * 20_000), 413, "too large"),
        ("oversized chunked body", "POST", label, {"content": iter([b" " * 1024] * 40), "headers": h}, 413,
         "too large"),
        ("empty body", "POST", label, {"content": b"", "headers": h}, 422, "missing field"),
        ("whitespace body", "POST", label, {"content": b"  \n ", "headers": h}, 422, "missing field"),
        # the ids
        ("missing query_id", "POST", label, without("query_id"), 422, "missing field 'query_id'"),
        ("missing show_id", "POST", label, without("show_id"), 422, "missing field 'show_id'"),
        ("null query_id", "POST", label, answer(query_id=None), 422, "missing field"),
        ("string query_id", "POST", label, answer(query_id=str(q)), 422, "must be an integer"),
        ("float query_id", "POST", label, answer(query_id=float(q)), 422, "must be an integer"),
        ("bool query_id", "POST", label, answer(query_id=True), 422, "must be an integer"),
        ("list query_id", "POST", label, answer(query_id=[q]), 422, "must be an integer"),
        ("object show_id", "POST", label, answer(show_id={"id": s}), 422, "must be an integer"),
        ("query_id 0", "POST", label, answer(query_id=0), 404, "unknown query id"),
        ("query_id -1", "POST", label, answer(query_id=-1), 404, "unknown query id"),
        ("query_id 2**31", "POST", label, answer(query_id=2**31), 404, "unknown query id"),
        ("query_id 2**63", "POST", label, answer(query_id=2**63), 404, "unknown query id"),
        ("query_id 2**64", "POST", label, answer(query_id=2**64), 404, "unknown query id"),
        ("a 4,001-digit query_id", "POST", label, answer(query_id=10**4000), 404, "unknown query id"),
        ("show_id 2**31", "POST", label, answer(show_id=2**31), 404, "unknown show id"),
        ("show_id 2**63", "POST", label, answer(show_id=2**63), 404, "unknown show id"),
        ("show_id -5", "POST", label, answer(show_id=-5), 404, "unknown show id"),
        ("unknown query id", "POST", label, answer(query_id=99_999), 404, "unknown query id"),
        ("unknown show id", "POST", label, answer(show_id=99_999), 404, "unknown show id"),
        ("show of another query", "POST", label, answer(query_id=other_query), 422, "not a showing"),
        ("another labeller's show", "POST", label, answer(show_id=others_show), 422, "not a showing"),
        # the answer
        ("missing outcome", "POST", label, without("outcome"), 422, "invalid outcome"),
        ("unknown outcome", "POST", label, answer(outcome="UP"), 422, "invalid outcome"),
        ("empty outcome", "POST", label, answer(outcome=""), 422, "invalid outcome"),
        ("numeric outcome", "POST", label, answer(outcome=0), 422, "invalid outcome"),
        ("null outcome", "POST", label, answer(outcome=None), 422, "invalid outcome"),
        ("list outcome", "POST", label, answer(outcome=["LEFT"]), 422, "invalid outcome"),
        ("NUL in outcome", "POST", label, answer(outcome="LEFT\u0000"), 422, "invalid outcome"),
        ("10,000-character outcome", "POST", label, answer(outcome="L" * 10_000), 422, "invalid outcome"),
        ("RANKING for a pair", "POST", label, answer(outcome="RANKING", ranking=[0, 1]), 422, "only for ranking"),
        ("ranking with LEFT", "POST", label, answer(ranking=[1, 0]), 422, "only allowed with outcome RANKING"),
        ("ranking not a list", "POST", label, answer(outcome="RANKING", ranking="0,1"), 422, "field 'ranking'"),
        ("ranking of strings", "POST", label, answer(outcome="RANKING", ranking=["0", "1"]), 422, "field 'ranking'"),
        ("ranking of bools", "POST", label, answer(outcome="RANKING", ranking=[True, False]), 422, "field 'ranking'"),
        ("ranking of 17", "POST", label, answer(outcome="RANKING", ranking=list(range(17))), 422, "field 'ranking'"),
        ("ranking with 2**70", "POST", label, answer(outcome="RANKING", ranking=[0, 2**70]), 422, "only for ranking"),
        ("NUL in reason", "POST", label, answer(reason="because\u0000"), 422, "NUL"),
        ("lone surrogate in reason", "POST", label, raw(json.dumps(good)[:-1] + ', "reason": "\\ud800"}'), 422,
         "surrogate"),
        ("2,001-character reason", "POST", label, answer(reason="x" * 2001), 422, "at most 2000"),
        ("numeric reason", "POST", label, answer(reason=3), 422, "'reason' must be a string"),
        ("next not a bool", "POST", label, answer(next="yes"), 422, "'next' must be true or false"),
        # the long poll
        ("negative wait_s", "POST", nxt, body({"wait_s": -1}), 422, "wait_s"),
        ("wait_s 999", "POST", nxt, body({"wait_s": 999}), 422, "wait_s"),
        ("string wait_s", "POST", nxt, body({"wait_s": "5"}), 422, "wait_s"),
        ("bool wait_s", "POST", nxt, body({"wait_s": True}), 422, "wait_s"),
        ("NaN wait_s", "POST", nxt, raw('{"wait_s": NaN}'), 422, "wait_s"),
        ("Infinity wait_s", "POST", nxt, raw('{"wait_s": Infinity}'), 422, "wait_s"),
        ("wait_s 1e400", "POST", nxt, raw('{"wait_s": 1e400}'), 422, "wait_s"),
        ("array body to next", "POST", nxt, body([1]), 400, "must be an object"),
        ("malformed JSON to undo", "POST", undo, raw("{"), 400, "malformed JSON"),
        ("undo with nothing to undo", "POST", undo, body({}), 404, "nothing to undo"),
        # tokens: in a header, valid, never in the URL of a POST
        ("missing token", "POST", label, {"content": json.dumps(good).encode(),
                                          "headers": {"Content-Type": "application/json"}}, 401, "missing labeller token"),
        ("wrong token", "POST", label, {"content": json.dumps(good).encode(), "headers": {
            **h, "X-Label-Token": "w" * 24}}, 403, "unknown labeller token"),
        ("600-character token", "POST", label, {"content": json.dumps(good).encode(), "headers": {
            **h, "X-Label-Token": "t" * 600}}, 403, "unknown labeller token"),
        ("token in the URL of a POST /api/label", "POST", f"{label}?token={token}", {
            "content": json.dumps(good).encode(), "headers": {"Content-Type": "application/json"}}, 401,
         "X-Label-Token header"),
        ("token in the URL of a POST /api/next", "POST", f"{nxt}?token={token}", {"json": {}}, 401,
         "X-Label-Token header"),
        ("token in the URL of a POST /api/undo", "POST", f"{undo}?token={token}", {"json": {}}, 401,
         "X-Label-Token header"),
        ("token in the URL of GET /api/progress", "GET", f"/api/progress?token={token}", {}, 401,
         "X-Label-Token header"),
        # methods and paths
        ("state change by GET", "GET", label, {"headers": h}, 405, "only by POST"),
        ("PUT an answer", "PUT", label, answer(), 405, "only by POST"),
        ("DELETE next", "DELETE", nxt, {"headers": h}, 405, "only by POST"),
        ("GET undo", "GET", undo, {"headers": h}, 405, "only by POST"),
        ("unknown route", "POST", "/api/nope", body({}), 404, "not found"),
        ("media path traversal", "GET", "/media/%2e%2e/%2e%2e/labels.sqlite", {"headers": h}, 400, "media folder"),
        ("encoded-slash traversal", "GET", "/media/..%2F..%2Fetc%2Fpasswd", {"headers": h}, 400, "media folder"),
        ("absolute media path", "GET", "/media//etc/passwd", {"headers": h}, 400, "media folder"),
        ("NUL in a media path", "GET", "/media/a%00.mp4", {"headers": h}, 400, "media folder"),
        ("media without a token", "GET", "/media/x.mp4", {}, 401, "missing labeller token"),
    ]
