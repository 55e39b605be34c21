"""The human teacher: queries go to the preference store, a person answers them on the web page.

:class:`HumanTeacher` implements the same :class:`~rlhfkit.feedback.teachers.Teacher` protocol as
the synthetic teachers, so the loop of Christiano et al. (2017) cannot tell a script from a
person: ``label(pairs)`` saves the fragments, renders each pair to two clips, posts the queries
(most uncertain first: the loop hands pairs over in order of ensemble disagreement), waits —
showing progress — until every query is answered, closes them (no more undo) and returns one
:class:`~rlhfkit.feedback.records.Outcome` per pair.

With several labellers per query (``labels_per_query``) the answers are combined by majority
(:func:`combine_outcomes`). Every answer stays in the store whatever happens to the run; the
fragments behind clip queries are kept in ``fragments/`` beside the media, so
:func:`comparisons_from_store` rebuilds the comparisons from the store alone.

To serve the page in-process, see :func:`rlhfkit.app.start_human_teacher`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlhfkit.feedback.records import Comparison, Fragment, Outcome
from rlhfkit.feedback.store import Label, Query, QuerySpec, Store, StoreError

__all__ = ["GUIDELINES", "HumanTeacher", "combine_outcomes", "comparisons_from_store", "load_query_pair"]

Pair = tuple[Fragment, Fragment]

GUIDELINES: dict[str, str] = {
    "Pendulum": "The goal: swing the pendulum up and keep it balanced upright (pointing up), "
                "moving and pushing as little as possible. Closer to upright and steadier is better.",
    "CartPole": "The goal: keep the pole upright on the cart. More upright is better.",
    "rlhfkit/CartPoleCos": "The goal: keep the pole upright on the cart. More upright is better.",
    "HalfCheetah": "The goal: run forward (to the right) as fast as possible.",
    "Hopper": "The goal: hop forward (to the right) without falling.",
    "Walker2d": "The goal: walk forward (to the right) without falling.",
}
"""What the task is, per environment family, shown above the general guidelines."""


def combine_outcomes(outcomes: Sequence[Outcome]) -> Outcome:
    """One outcome from several labellers' answers to the same pair, by majority.

    ``SKIP`` and ``CANT_TELL`` are abstentions; among the rest (``LEFT``, ``RIGHT``, ``TIE``,
    ``BOTH_BAD``) the most frequent wins and an even split is a ``TIE``. With only abstentions,
    ``CANT_TELL`` if anyone said so, else ``SKIP``.

    Raises:
        ValueError: for an empty list.
    """
    if not outcomes:
        raise ValueError("combine_outcomes needs at least one answer")
    outcomes = [Outcome(o) for o in outcomes]
    votes = Counter(o for o in outcomes if o not in (Outcome.SKIP, Outcome.CANT_TELL))
    if not votes:
        return Outcome.CANT_TELL if Outcome.CANT_TELL in outcomes else Outcome.SKIP
    top = max(votes.values())
    winners = [o for o, n in votes.items() if n == top]
    return winners[0] if len(winners) == 1 else Outcome.TIE


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_NPZ_CACHE: dict[Path, dict[str, np.ndarray]] = {}


def load_query_pair(store: Store, query: Query | int) -> Pair:
    """The two fragments behind a clip query posted by a :class:`HumanTeacher` (canonical order).

    Raises:
        StoreError: if the query has no fragments payload or its file is missing.
    """
    if isinstance(query, int):
        query = store.query(query)
    payload = query.payload or {}
    if "fragments" not in payload or "index" not in payload:
        raise StoreError(f"query {query.id} has no fragments payload (it was not posted by a HumanTeacher)")
    path = (store.fragments_dir.parent / payload["fragments"]).resolve()
    if not path.is_relative_to(store.fragments_dir.resolve()) or not path.is_file():
        raise StoreError(f"query {query.id}: fragments file {payload['fragments']!r} is missing")
    data = _NPZ_CACHE.get(path)
    if data is None:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        _NPZ_CACHE.clear()
        _NPZ_CACHE[path] = data
    i = int(payload["index"])

    def frag(side: str) -> Fragment:
        return Fragment(data[f"{side}_obs"][i], data[f"{side}_acts"][i], data[f"{side}_true_rewards"][i],
                        episode=int(data[f"{side}_episode"][i]), start=int(data[f"{side}_start"][i]))

    return frag("left"), frag("right")


def comparisons_from_store(store: Store, *, batch: str | None = None) -> list[Comparison]:
    """Rebuild the comparisons of every answered query posted by a :class:`HumanTeacher` (of one batch).

    Each query's active answers are combined with :func:`combine_outcomes`; the teacher field is
    the labellers' names joined by ``+``. Queries without a fragments payload are left out.
    """
    qs = [q for q in store.queries(batch=batch) if (q.payload or {}).get("fragments")]
    by_query: dict[int, list[Label]] = {}
    for lab in store.labels(query_ids=[q.id for q in qs]):
        by_query.setdefault(lab.query_id, []).append(lab)
    out = []
    for q in qs:
        labs = by_query.get(q.id)
        if not labs:
            continue
        left, right = load_query_pair(store, q)
        outcome = combine_outcomes([lab.pair_outcome for lab in labs if lab.pair_outcome is not None])
        out.append(Comparison(left, right, outcome, "+".join(sorted({lab.labeller for lab in labs}))))
    return out


@dataclass
class HumanTeacher:
    """A teacher whose answers come from people, through the store and the labelling page.

    Args:
        store: the preference store the page serves from.
        env_id: the environment the fragments come from (to render clips).
        render: render clips (``clip_pair`` queries); False posts ``text_pair`` placeholders
            naming each fragment — only for scripted labellers (tests, benchmarks).
        frame_skip: render every ``frame_skip``-th step (playback stays real time).
        max_size: largest clip side in pixels.
        fmt: ``mp4`` (H.264) or ``webm``.
        labels_per_query: how many labellers answer each query (N); answers are combined by
            majority.
        timeout_s: longest wait for one batch of queries, or None to wait forever.
        on_timeout: what to do when ``timeout_s`` passes: the unanswered queries are cancelled
            (answers given so far stay in the store), then ``raise`` a :class:`TimeoutError`, or
            ``skip``: return SKIP for the unanswered ones.
        grace_s: after the last answer of a batch, wait this long before closing it, so the
            labeller can still undo it.
        poll_s: how often the store is polled while waiting.
        render_workers: threads rendering clips (ffmpeg runs beside them in its own processes).
        url: the labelling URL to show in the progress line.
        show_progress: print progress (rich) while waiting.
        name: recorded on every comparison.
        label_budget: the run's label budget (comparisons), shown on the page with the count so far.

    Raises:
        ValueError: for bad arguments, or ``render`` with an env that has no state setter.
    """

    store: Store
    env_id: str | None = None
    render: bool = True
    frame_skip: int = 1
    max_size: int = 640
    fmt: Literal["mp4", "webm"] = "mp4"
    labels_per_query: int = 1
    timeout_s: float | None = 3600.0
    on_timeout: Literal["raise", "skip"] = "raise"
    grace_s: float = 1.0
    poll_s: float = 0.2
    render_workers: int = 1
    url: str | None = None
    show_progress: bool = True
    name: str = "human"
    on_progress: Callable[[dict[str, Any]], None] | None = None
    label_budget: int | None = None
    _state: str = field(default="starting", init=False, repr=False)
    _labelled: int | None = field(default=None, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _renderers: dict[int, Any] = field(default_factory=dict, init=False, repr=False)
    _n_batches: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.labels_per_query < 1:
            raise ValueError(f"labels_per_query must be >= 1, got {self.labels_per_query}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {self.timeout_s}")
        if self.on_timeout not in ("raise", "skip"):
            raise ValueError(f"on_timeout must be 'raise' or 'skip', got {self.on_timeout!r}")
        if self.grace_s < 0 or self.poll_s <= 0:
            raise ValueError(f"grace_s must be >= 0 and poll_s > 0, got {self.grace_s}, {self.poll_s}")
        if self.render_workers < 1:
            raise ValueError(f"render_workers must be >= 1, got {self.render_workers}")
        if self.render:
            if self.env_id is None:
                raise ValueError("HumanTeacher(render=True) needs env_id to render clips")
            from rlhfkit.feedback.clips import ClipRenderer

            ClipRenderer(self.env_id, frame_skip=self.frame_skip, max_size=self.max_size, fmt=self.fmt)  # checks
        self.store.fragments_dir  # noqa: B018 - raises early for a store without a data_dir

    def status(self) -> dict[str, Any]:
        """What the run is doing, for the page: ``state`` (``starting``: the agent collects its first
        experience; ``labelling``: a batch waits for answers; ``training``: the agent learns from
        them; ``finished``), ``labelled`` (comparisons this run has collected, resumed runs
        included) and ``budget`` (:attr:`label_budget`, or None)."""
        if self._labelled is None:  # a resumed run: its earlier batches are closed queries in the store
            prefix = f"{self.name}-"
            self._labelled = sum(q.batch.startswith(prefix) for q in self.store.queries(status="closed"))
        return {"state": self._state, "labelled": self._labelled, "budget": self.label_budget}

    # -- the Teacher protocol -----------------------------------------------------------------

    def label(self, pairs: Sequence[Pair], priorities: Sequence[float] | None = None) -> list[Outcome]:
        """Ask people about each ``(left, right)`` pair; return their outcomes, in order.

        Args:
            pairs: the fragment pairs, most informative first (the loop's order).
            priorities: serving priority per pair (higher first); default ``B, B-1, ..., 1``.

        Raises:
            TimeoutError: with ``on_timeout="raise"`` when ``timeout_s`` passes first.
            ValueError: if ``priorities`` has the wrong length.
        """
        pairs = list(pairs)
        if not pairs:
            return []
        B = len(pairs)
        prio = [float(B - i) for i in range(B)] if priorities is None else [float(p) for p in priorities]
        if len(prio) != B:
            raise ValueError(f"got {len(prio)} priorities for {B} pairs")
        self.status()  # count the earlier batches before this one is posted
        self._state = "labelling"
        self._n_batches += 1
        batch = f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        frag_rel = f"fragments/{batch}.npz"
        _save_npz(self.store.fragments_dir / f"{batch}.npz", _pairs_arrays(pairs))
        order = sorted(range(B), key=lambda i: -prio[i])
        posted: dict[int, Future] = {}
        if self.render:
            pool = self._executor()
            for i in order:  # most informative first; the two clips of a pair render in parallel
                posted[i] = Future()
                state = {"todo": 2, "lock": threading.Lock(), "media": [""] * 2}
                for k in range(2):
                    pool.submit(self._render_clip, batch, frag_rel, i, pairs[i], prio[i], k, state, posted[i])
        else:
            specs = [self._spec(frag_rel, i, pairs[i], prio[i], None) for i in range(B)]
            ids = self.store.add_queries(specs, batch=batch)
            for i, qid in enumerate(ids):
                fut: Future = Future()
                fut.set_result(qid)
                posted[i] = fut
        try:
            answers = self._wait(batch, B, posted)
        finally:
            self._state = "training"
        self._labelled = (self._labelled or 0) + B
        return [answers[i] for i in range(B)]

    # -- internals ----------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.render_workers, thread_name_prefix="rlhfkit-clips")
        return self._pool

    def _renderer(self) -> Any:
        from rlhfkit.feedback.clips import ClipRenderer

        key = threading.get_ident()
        if key not in self._renderers:  # one env per thread: GL contexts belong to their thread
            self._renderers[key] = ClipRenderer(self.env_id or "", frame_skip=self.frame_skip,
                                                max_size=self.max_size, fmt=self.fmt)
        return self._renderers[key]

    def _spec(self, frag_rel: str, i: int, pair: Pair, priority: float, media: list[str] | None) -> QuerySpec:
        left, right = pair
        payload = {"fragments": frag_rel, "index": i, "env_id": self.env_id,
                   "episode": [left.episode, right.episode], "start": [left.start, right.start], "steps": len(left)}
        if media is not None:
            return QuerySpec("clip_pair", [{"media": m} for m in media], priority=priority,
                             labels_needed=self.labels_per_query, payload=payload)
        items = [{"text": f"fragment {side}: episode {f.episode}, steps {f.start}–{f.start + len(f) - 1}"}
                 for side, f in (("A", left), ("B", right))]
        return QuerySpec("text_pair", items, priority=priority, labels_needed=self.labels_per_query, payload=payload)

    def _render_clip(self, batch: str, frag_rel: str, i: int, pair: Pair, priority: float, k: int,
                     state: dict[str, Any], posted: Future) -> None:
        """Render clip ``k`` of pair ``i``; the second of the two to finish posts the query."""
        if posted.done():  # cancelled (timeout) or failed
            return
        try:
            rel = f"{batch}/{i:04d}{'ab'[k]}.{self.fmt}"
            self._renderer().render(pair[k], self.store.media_dir / rel)
        except BaseException as e:  # noqa: BLE001 - surfaces in _wait
            with state["lock"]:
                if posted.set_running_or_notify_cancel():
                    posted.set_exception(e)
            return
        with state["lock"]:
            state["media"][k] = rel
            state["todo"] -= 1
            if state["todo"] > 0 or not posted.set_running_or_notify_cancel():
                return
        try:
            qid = self.store.add_queries([self._spec(frag_rel, i, pair, priority, state["media"])], batch=batch)[0]
        except BaseException as e:  # noqa: BLE001 - surfaces in _wait
            posted.set_exception(e)
        else:
            posted.set_result(qid)

    def _wait(self, batch: str, B: int, posted: dict[int, Future]) -> dict[int, Outcome]:
        start = time.monotonic()
        collected: dict[int, list[Label]] = {}
        progress = _Progress(self.show_progress, B, self.url)
        try:
            while True:
                for fut in posted.values():  # a rendering error surfaces here
                    if fut.done() and fut.exception() is not None:
                        raise fut.exception()  # type: ignore[misc]
                n_posted = sum(f.done() for f in posted.values())
                st = self.store.batch_progress(batch)
                answered = st["done"] + st["closed"]
                info = {"batch": batch, "posted": n_posted, "answered": answered, "total": B,
                        "elapsed_s": time.monotonic() - start}
                progress.update(info)
                if self.on_progress:
                    self.on_progress(info)
                if n_posted == B and st["done"] > 0 and answered == B and \
                        time.time() - float(st["last_answer_at"]) >= self.grace_s:
                    collected.update(self.store.collect(batch))
                    if len(collected) == B:
                        break
                if self.timeout_s is not None and time.monotonic() - start > self.timeout_s:
                    return self._timed_out(batch, B, posted, collected)
                time.sleep(self.poll_s)
        finally:
            progress.close()
        qid_to_index = {f.result(): i for i, f in posted.items()}
        return {qid_to_index[qid]: self._outcome(labs) for qid, labs in collected.items()}

    def _timed_out(self, batch: str, B: int, posted: dict[int, Future], collected: dict[int, list[Label]]
                   ) -> dict[int, Outcome]:
        for fut in posted.values():
            fut.cancel()  # clips not yet being rendered are never posted
        for fut in posted.values():
            if not fut.cancelled():
                fut.exception()  # wait for renders in flight, so their queries exist before cancelling
        collected.update(self.store.collect(batch))
        self.store.cancel(batch)
        if self.on_timeout == "raise":
            raise TimeoutError(
                f"{len(collected)}/{B} queries of batch {batch} were answered within {self.timeout_s:.0f} s; "
                f"every answer given is kept in the store {self.store.url}")
        out = {i: Outcome.SKIP for i in range(B)}
        for i, fut in posted.items():
            if not fut.cancelled() and fut.exception() is None and fut.result() in collected:
                out[i] = self._outcome(collected[fut.result()])
        return out

    @staticmethod
    def _outcome(labs: list[Label]) -> Outcome:
        outcomes = [lab.pair_outcome for lab in labs if lab.pair_outcome is not None]
        return combine_outcomes(outcomes) if outcomes else Outcome.SKIP

    def close(self) -> None:
        """Stop the render threads and close their environments; the page then says the run is over."""
        self._state = "finished"
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def _pairs_arrays(pairs: Sequence[Pair]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for k, side in enumerate(("left", "right")):
        frags = [p[k] for p in pairs]
        arrays[f"{side}_obs"] = np.stack([f.obs for f in frags])
        arrays[f"{side}_acts"] = np.stack([f.acts for f in frags])
        arrays[f"{side}_true_rewards"] = np.stack([f.true_rewards for f in frags])
        arrays[f"{side}_episode"] = np.array([f.episode for f in frags], dtype=np.int64)
        arrays[f"{side}_start"] = np.array([f.start for f in frags], dtype=np.int64)
    return arrays


class _Progress:
    """A rich progress bar of answered queries (or nothing, when disabled)."""

    def __init__(self, enabled: bool, total: int, url: str | None) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("[bold]waiting for labels"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True)
        self._task = self._bar.add_task("labels", total=total, info=f"· open {url}" if url else "")
        try:
            self._bar.start()
        except Exception:  # noqa: BLE001 - another live display (e.g. the CLI's progress bar) is running
            self._bar = None

    def update(self, info: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=info["answered"])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
