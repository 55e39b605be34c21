"""The labelling page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

Answers by keyboard and by click, undoes one answer, and checks that the store holds exactly the
expected outcomes and shown orders. Needs ``/usr/bin/chromium`` (``make browser`` installs it):
without it this test fails — it never skips.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlhfkit.app import create_app, start_server
from rlhfkit.feedback import Fragment
from rlhfkit.feedback.clips import ClipRenderer
from rlhfkit.feedback.store import QuerySpec, Store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-token-0123456789"
SWAP = {"LEFT": "RIGHT", "RIGHT": "LEFT"}


def launch(p):
    """Debian's Chromium through Playwright (Playwright's own browser download cannot work here)."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def pendulum_fragment(seed: int) -> Fragment:
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    o, a, r = [], [], []
    for _ in range(12):
        act = env.action_space.sample()
        o.append(obs)
        a.append(act)
        obs, rew, *_ = env.step(act)
        r.append(rew)
    env.close()
    return Fragment(np.array(o), np.array(a), np.array(r))


def wait_until(page, js: str, timeout_s: float = 10.0) -> None:
    """Poll a JS predicate from Python (the page's CSP forbids the eval behind wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(js):
        assert time.monotonic() < deadline, f"timed out waiting for {js}"
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path):
    store = Store(tmp_path / "labels.sqlite", seed=7)
    store.add_labeller("ann", token=TOKEN)
    renderer = ClipRenderer("Pendulum-v1", frame_skip=2, max_size=128)
    media = [renderer.render(pendulum_fragment(s), store.media_dir / "b" / f"clip{s}.mp4") for s in (0, 1)]
    renderer.close()
    store.add_queries([QuerySpec("clip_pair", [{"media": f"b/{m.name}"} for m in media], priority=10)])
    store.add_queries([QuerySpec("text_pair", [{"text": f"<b>bold</b> left {i}"}, {"text": f"right {i}"}],
                                 prompt="<script>window.hacked = 1</script> Which reply is kinder?", priority=5 - i)
                       for i in range(4)])
    store.add_queries([QuerySpec("ranking", [{"text": t} for t in ("alpha", "beta", "gamma")], prompt="Rank these")])
    handle = start_server(create_app(store, guidelines="Prefer the upright pendulum."), port=0)
    yield store, f"{handle.base_url}/label?token={TOKEN}"
    handle.stop()
    store.close()


def test_label_by_keyboard_and_click_with_undo(served) -> None:
    from playwright.sync_api import sync_playwright

    store, url = served
    shown: list[tuple[int, int]] = []  # (query id, show id) of each answer, in order

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        acks = [0]

        def current() -> tuple[int, int]:
            page.wait_for_selector("body[data-state='ready']")
            return (int(page.get_attribute("#query", "data-query-id")),
                    int(page.get_attribute("#query", "data-show-id")))

        def answered(action) -> None:
            shown.append(current())
            action()
            acks[0] += 1
            page.wait_for_selector(f"body[data-acks='{acks[0]}']")

        # 1. the clip pair: both videos load and play (H.264 in Chromium), answered with ←
        current()
        wait_until(page, "() => { const a = document.getElementById('clip-left'), "
                         "b = document.getElementById('clip-right'); "
                         "return a.readyState >= 2 && b.readyState >= 2 && a.currentTime > 0 && b.currentTime > 0; }")
        assert page.is_visible("#clip-left") and page.is_visible("#clip-right")
        answered(lambda: page.keyboard.press("ArrowLeft"))

        # 2. a text pair: the prompt and responses are shown as text, never as HTML; answered with 2
        current()
        assert page.inner_text("#prompt").startswith("<script>window.hacked = 1</script>")
        assert page.locator("#prompt script").count() == 0 and page.evaluate("() => window.hacked") is None
        assert "<b>bold</b>" in page.inner_text("#query") and page.locator("#query b").count() == 0
        assert page.is_visible("#text-left") and not page.is_visible("#clip-left")
        assert not page.is_visible("#ranking-buttons")
        answered(lambda: page.keyboard.press("2"))

        # 3. by click: Tie;  4. by click: Both bad
        answered(lambda: page.click("button[data-outcome='TIE']"))
        answered(lambda: page.click("button[data-outcome='BOTH_BAD']"))
        undone_query = shown[-1][0]

        # 5. u undoes the last answer: the same query comes back
        page.keyboard.press("u")
        acks[0] += 1
        page.wait_for_selector(f"body[data-acks='{acks[0]}']")
        assert current()[0] == undone_query

        # 6. keys typed into the reason box are text, not answers; then answer it by click
        page.click("#reason")
        page.keyboard.type("looks 1 2 b s u")
        assert page.get_attribute("body", "data-acks") == str(acks[0])
        page.keyboard.press("Escape")
        answered(lambda: page.click("button[data-outcome='CANT_TELL']"))

        # 7. the last text pair by ↓ (tie)
        answered(lambda: page.keyboard.press("ArrowDown"))

        # 8. the ranking: positions 3, 1, 2 (best first), then Enter
        assert page.get_attribute("#query", "data-kind") == "ranking"
        assert not page.is_visible("#pair") and not page.is_visible("#pair-buttons")
        assert page.is_visible("#ranking") and page.is_disabled("#submit-ranking")
        shown.append(current())
        for key in ("3", "1", "2"):
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        acks[0] += 1
        page.wait_for_selector(f"body[data-acks='{acks[0]}']")

        # nothing left: the page says so, the counter shows 6 answers, g opens the guidelines
        page.wait_for_selector("body[data-state='empty']")
        assert page.inner_text("#progress").startswith("6 answered")
        for hint in ("←", "→", "↓", "both bad", "can't tell", "skip", "undo"):
            assert hint in page.inner_text("#keys")
        page.keyboard.press("g")
        assert page.get_attribute("#guidelines", "open") is not None
        assert "Prefer the upright pendulum." in page.inner_text("#guidelines-text")
        assert errors == []
        browser.close()

    # the store holds exactly the expected answers, in canonical terms, with the orders shown
    labels = store.labels()
    given = ["LEFT", "RIGHT", "TIE", "CANT_TELL", "TIE", "RANKING"]
    assert [lab.query_id for lab in labels] == [q for q, _ in shown[:3] + shown[4:]]
    for lab, (qid, sid), answer in zip(labels, shown[:3] + shown[4:], given):
        order = store.show(sid).order
        assert lab.shown_order == order and lab.show_id == sid
        if answer in SWAP:  # LEFT as shown is canonical LEFT iff the first item was shown on the left
            assert lab.outcome == (answer if order[0] == 0 else SWAP[answer])
        elif answer == "RANKING":
            assert lab.outcome == "RANKING" and lab.ranking == tuple(order[p] for p in (2, 0, 1))
        else:
            assert lab.outcome == answer
    assert labels[3].reason == "looks 1 2 b s u"
    retracted = [lab for lab in store.labels(include_retracted=True) if lab.retracted_at is not None]
    assert [(lab.query_id, lab.outcome) for lab in retracted] == [(shown[3][0], "BOTH_BAD")]
    assert store.show(shown[4][1]).order == store.show(shown[3][1]).order  # undone: shown again the same way
