"""Labellers and their tokens: registration, extra tokens, revocation, constant-time lookup.

Only SHA-256 digests of tokens are stored. A labeller may hold several tokens (one per server
start, say); revoking is explicit (:meth:`Store.set_labeller_token`), never a side effect.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.engine import Connection

from rlhfkit.feedback.store import schema as S
from rlhfkit.feedback.store.types import ConflictError, InvalidInputError, Labeller, check_text, short

if TYPE_CHECKING:
    from rlhfkit.feedback.store.core import Store

__all__ = ["TokenCache", "add_labeller", "check_name", "hash_token", "issue_token", "revoke_other_tokens"]


def hash_token(token: str) -> str:
    """The stored form of a token: its SHA-256 hex digest."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: Any) -> str:
    """A labeller name, stripped: 1–100 printable characters.

    Raises:
        InvalidInputError: otherwise.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"labeller name must be a string, got {type(name).__name__}")
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise InvalidInputError(f"labeller name must be 1-100 printable characters, got {short(name, 110)}")
    return check_text(name, "labeller name", 100)


def check_token(token: str | None) -> str:
    """``token``, or a fresh random one (192 bits) for None.

    Raises:
        InvalidInputError: for a token that is not 16–512 printable characters without spaces at the ends.
    """
    if token is None:
        return secrets.token_urlsafe(24)
    if not isinstance(token, str) or not 16 <= len(token) <= 512 or not token.isprintable() or token != token.strip():
        raise InvalidInputError("a labeller token must be 16 to 512 printable characters, without spaces at the ends")
    return token


def _holder(conn: Connection, digest: str, labeller_id: int | None) -> bool:
    """Raise if another labeller holds ``digest``; return whether ``labeller_id`` holds it."""
    holder = conn.execute(select(S.labeller_tokens.c.labeller_id)
                          .where(S.labeller_tokens.c.token_hash == digest)).scalar()
    if holder is None:
        holder = conn.execute(select(S.labellers.c.id).where(S.labellers.c.token_hash == digest)).scalar()
    if holder is not None and holder != labeller_id:
        raise ConflictError("that token is already in use by another labeller")
    return holder is not None


def add_labeller(store: Store, name: str, token: str | None) -> str:
    """See :meth:`Store.add_labeller`."""
    name, token = check_name(name), check_token(token)
    digest = hash_token(token)

    def fn(conn: Connection) -> None:
        if conn.execute(select(S.labellers.c.id).where(S.labellers.c.name == name)).first():
            raise ConflictError(f"labeller {name!r} already exists")
        _holder(conn, digest, None)
        now = time.time()
        try:
            lab_id = conn.execute(S.labellers.insert().values(name=name, token_hash=digest, created_at=now)
                                  ).inserted_primary_key[0]
        except sa.exc.IntegrityError:  # another process registered the name a moment ago
            raise ConflictError(f"labeller {name!r} already exists") from None
        conn.execute(S.labeller_tokens.insert().values(labeller_id=lab_id, token_hash=digest, created_at=now))

    store._write(fn)
    return token


def issue_token(store: Store, name: str, token: str | None) -> str:
    """See :meth:`Store.issue_token`."""
    name, token = check_name(name), check_token(token)
    digest = hash_token(token)
    if not any(lab.name == name for lab in store.labellers()):
        try:
            return add_labeller(store, name, token)
        except ConflictError:
            if not any(lab.name == name for lab in store.labellers()):  # the token was taken, not the name
                raise

    def fn(conn: Connection) -> None:
        lab_id = conn.execute(select(S.labellers.c.id).where(S.labellers.c.name == name)).scalar_one()
        if _holder(conn, digest, lab_id):
            conn.execute(S.labeller_tokens.update().where(S.labeller_tokens.c.token_hash == digest)
                         .values(revoked_at=None))
            return
        try:
            conn.execute(S.labeller_tokens.insert().values(labeller_id=lab_id, token_hash=digest,
                                                           created_at=time.time()))
        except sa.exc.IntegrityError:
            raise ConflictError("that token is already in use by another labeller") from None

    store._write(fn)
    return token


def revoke_other_tokens(store: Store, name: str, token: str) -> None:
    """Revoke every token of ``name`` but ``token``."""
    name, digest = check_name(name), hash_token(token)

    def fn(conn: Connection) -> None:
        lab_id = conn.execute(select(S.labellers.c.id).where(S.labellers.c.name == name)).scalar_one()
        conn.execute(S.labeller_tokens.update()
                     .where(S.labeller_tokens.c.labeller_id == lab_id, S.labeller_tokens.c.token_hash != digest,
                            S.labeller_tokens.c.revoked_at.is_(None))
                     .values(revoked_at=time.time()))

    store._write(fn)


class TokenCache:
    """The valid token digests, reloaded every 5 s (and after a miss, at most once a second).

    Args:
        read: opens a read connection (``Store._read``).
    """

    def __init__(self, read: Callable[[], Connection]) -> None:
        self._read = read
        self._tokens: list[tuple[str, Labeller]] = []
        self._loaded = -math.inf
        self._lock = threading.Lock()

    def expire(self) -> None:
        """Reload before the next lookup."""
        self._loaded = -math.inf

    def lookup(self, token: str | None) -> Labeller | None:
        """The labeller holding ``token``, or None (see :meth:`Store.labeller_for_token`)."""
        if not token or not isinstance(token, str) or len(token) > 512:
            return None
        digest = hash_token(token)
        if time.monotonic() - self._loaded > 5.0:  # tokens changed by another process expire here
            self.load()
        found = self._match(digest)
        if found is None and time.monotonic() - self._loaded > 1.0:
            self.load()
            found = self._match(digest)
        return found

    def _match(self, digest: str) -> Labeller | None:
        found = None
        for known, lab in self._tokens:
            if hmac.compare_digest(known, digest):
                found = lab
        return found

    def load(self) -> None:
        """Read the valid (not revoked) tokens now."""
        with self._lock:
            with self._read() as conn:
                rows = conn.execute(select(S.labeller_tokens.c.token_hash, S.labellers.c.id, S.labellers.c.name,
                                           S.labellers.c.created_at)
                                    .join(S.labellers, S.labellers.c.id == S.labeller_tokens.c.labeller_id)
                                    .where(S.labeller_tokens.c.revoked_at.is_(None))).all()
            self._tokens = [(r.token_hash, Labeller(r.id, r.name, r.created_at)) for r in rows]
            self._loaded = time.monotonic()
