// rlhfkit labelling page: vanilla JS, no dependencies.
// Text from the server is only ever put into the page with textContent (never as HTML).
"use strict";
(() => {
  const body = document.body;
  const token = body.dataset.token;
  const $ = (id) => document.getElementById(id);
  const NAMES = { LEFT: "left is better", RIGHT: "right is better", TIE: "tie", BOTH_BAD: "both bad",
                  CANT_TELL: "can't tell", SKIP: "skipped", RANKING: "ranking" };
  const PAIR_KEYS = { ArrowLeft: "LEFT", "1": "LEFT", ArrowRight: "RIGHT", "2": "RIGHT", ArrowDown: "TIE", "3": "TIE",
                      b: "BOTH_BAD", c: "CANT_TELL", s: "SKIP" };
  let current = null;     // the query on screen, as sent by the server
  let busy = false;       // a request is in flight: further answers are ignored
  let pollTimer = null;
  let picks = [];         // ranking: display positions picked so far, best first
  let acks = 0;           // answers and undos the server acknowledged (tests wait on it)
  let statusTimer = null;
  let view = 0;           // bumped by every show(): a late long poll must not replace a newer view
  let run = null;         // what the training run is doing ({state, labelled, budget}), when there is one
  let failures = 0;       // consecutive failed polls (the server may be gone: the run ended)
  const EMPTY = {
    starting: "The agent is collecting its first experience; the first pair appears here in a moment.",
    labelling: "Nothing is waiting for you right now; new queries appear here as soon as they are posted.",
    training: "The agent is training on your answers. New pairs appear here as soon as it needs more.",
    finished: "The run is over — thank you! Every answer you gave is saved. You can close this tab.",
  };

  async function api(path, payload) {
    let res;
    try {
      res = await fetch(path, {
        method: "POST", cache: "no-store",
        headers: { "Content-Type": "application/json", "X-Label-Token": token },
        body: JSON.stringify(payload || {}),
      });
    } catch (e) {
      const err = new Error("Cannot reach the labelling server (has the run ended?). Your saved answers are safe.");
      err.network = true;
      throw err;
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) throw new Error((data && data.error) || `the server answered HTTP ${res.status}`);
    return data;
  }

  function setStatus(msg, kind) {
    const el = $("status");
    el.textContent = msg;
    el.className = `status show ${kind || ""}`;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { el.className = "status"; }, kind === "error" ? 6000 : 1500);
  }

  function setProgress(p, r) {
    if (r !== undefined) run = r;
    if (!p) return;
    let text = `${p.answered} answered · ${p.waiting} waiting`;
    if (run && run.budget) text += ` · run: ${run.labelled} of ${run.budget} labels`;
    $("progress").textContent = text;
  }

  function emptyMessage() {
    return EMPTY[(run && run.state) || "labelling"] || EMPTY.labelling;
  }

  function mediaUrl(path) {
    return "/media/" + path.split("/").map(encodeURIComponent).join("/") + "?token=" + encodeURIComponent(token);
  }

  function messagesText(msgs) {
    return msgs.map((m) => `${m.role || "?"}: ${m.content}`).join("\n\n");
  }

  function itemText(item) {
    if (typeof item.text === "string") return item.text;
    if (Array.isArray(item.messages)) return messagesText(item.messages);
    return "";
  }

  function setEnabled(on) {
    document.querySelectorAll("#controls button").forEach((b) => {
      if (b.id === "undo") return;
      b.disabled = !on || (b.id === "submit-ranking" && !(current && picks.length === current.items.length));
    });
  }

  function stopVideos() {
    document.querySelectorAll("video").forEach((v) => { v.pause(); v.removeAttribute("src"); v.load(); });
  }

  function syncPair(a, b) {
    // Start both clips together and keep the right one on the left one's clock.
    let ready = 0;
    const start = () => {
      ready += 1;
      if (ready < 2) return;
      a.currentTime = 0; b.currentTime = 0;
      a.play().catch(() => {}); b.play().catch(() => {});
    };
    a.onloadeddata = start; b.onloadeddata = start;
    a.ontimeupdate = () => {
      if (!b.paused && Math.abs(b.currentTime - a.currentTime) > 0.1 && a.currentTime < b.duration) {
        b.currentTime = a.currentTime;
      }
    };
  }

  function fillItem(video, pre, item) {
    if (typeof item.media === "string") {
      pre.hidden = true; pre.textContent = "";
      video.hidden = false; video.src = mediaUrl(item.media);
    } else {
      video.hidden = true; video.removeAttribute("src");
      pre.hidden = false; pre.textContent = itemText(item);
    }
  }

  function renderRanking(q) {
    const ol = $("ranking");
    ol.replaceChildren();
    q.items.forEach((item, pos) => {
      const li = document.createElement("li");
      li.dataset.pos = String(pos);
      const badge = document.createElement("span"); badge.className = "badge";
      const label = document.createElement("div"); label.className = "pos"; label.textContent = `item ${pos + 1} (key ${pos + 1})`;
      li.append(badge, label);
      if (typeof item.media === "string") {
        const v = document.createElement("video");
        v.muted = true; v.loop = true; v.autoplay = true; v.playsInline = true; v.src = mediaUrl(item.media);
        li.append(v);
      } else {
        const pre = document.createElement("pre"); pre.className = "response"; pre.textContent = itemText(item);
        li.append(pre);
      }
      li.addEventListener("click", () => pick(pos));
      ol.append(li);
    });
  }

  function pick(pos) {
    if (!current || current.kind !== "ranking" || busy || pos >= current.items.length || picks.includes(pos)) return;
    picks.push(pos);
    const li = $("ranking").children[pos];
    li.classList.add("picked");
    li.querySelector(".badge").textContent = `#${picks.length}`;
    setEnabled(true);
  }

  function resetRanking() {
    picks = [];
    Array.from($("ranking").children).forEach((li) => { li.classList.remove("picked"); li.querySelector(".badge").textContent = ""; });
    setEnabled(true);
  }

  function show(q) {
    view += 1;
    clearTimeout(pollTimer);
    stopVideos();
    current = q; picks = [];
    const main = $("query");
    main.dataset.queryId = q ? String(q.query_id) : "";
    main.dataset.showId = q ? String(q.show_id) : "";
    main.dataset.kind = q ? q.kind : "";
    $("empty").hidden = !!q;
    $("empty").textContent = emptyMessage();
    $("title").textContent = !q ? "Waiting for queries" : q.kind === "ranking" ? "Rank these, best first"
      : "Which is better?";
    $("pair").hidden = !q || q.kind === "ranking";
    $("ranking").hidden = !q || q.kind !== "ranking";
    $("pair-buttons").hidden = !!q && q.kind === "ranking";
    $("ranking-buttons").hidden = !q || q.kind !== "ranking";
    document.querySelectorAll("[data-pair-only]").forEach((b) => { b.hidden = !!q && q.kind === "ranking"; });
    const prompt = $("prompt");
    if (q && q.prompt !== null && q.prompt !== undefined) {
      prompt.hidden = false;
      prompt.textContent = Array.isArray(q.prompt) ? messagesText(q.prompt) : String(q.prompt);
    } else {
      prompt.hidden = true; prompt.textContent = "";
    }
    if (!q) {
      setEnabled(false);
      if (run && run.state === "finished") {  // the end of the run: stop polling, say so
        body.dataset.state = "finished";
        $("title").textContent = "Done — thank you!";
        return;
      }
      body.dataset.state = "empty";
      pollTimer = setTimeout(() => load(20), 50);  // long poll: the server answers when a query arrives
      return;
    }
    if (q.kind === "ranking") {
      renderRanking(q);
    } else {
      fillItem($("clip-left"), $("text-left"), q.items[0]);
      fillItem($("clip-right"), $("text-right"), q.items[1]);
      if (typeof q.items[0].media === "string" && typeof q.items[1].media === "string") syncPair($("clip-left"), $("clip-right"));
    }
    body.dataset.state = "ready";
    setEnabled(true);
  }

  async function load(waitS) {
    const seen = view;
    try {
      const d = await api("/api/next", waitS ? { wait_s: waitS } : {});
      failures = 0;
      if (seen !== view) return;  // an undo showed something meanwhile (its query stays leased to us)
      setProgress(d.progress, d.run);
      show(d.query);
    } catch (e) {
      if (seen !== view) return;
      failures += 1;
      if (e.network && !current) {  // keep the message on screen, not in a passing toast
        $("empty").hidden = false;
        $("empty").textContent = `${e.message} Trying again…`;
        body.dataset.state = "offline";
      } else {
        setStatus(e.message, "error");
      }
      pollTimer = setTimeout(() => load(20), Math.min(30000, 2000 * failures));
    }
  }

  async function answer(outcome) {
    if (busy || !current) return;
    const payload = { query_id: current.query_id, show_id: current.show_id, outcome, next: true };
    if (outcome === "RANKING") {
      if (picks.length !== current.items.length) { setStatus("Rank every item first (click them best first).", "error"); return; }
      payload.ranking = picks.slice();
    }
    const reason = $("reason").value.trim();
    if (reason) payload.reason = reason;
    busy = true; body.dataset.state = "busy"; setEnabled(false);
    try {
      const d = await api("/api/label", payload);
      acks += 1; body.dataset.acks = String(acks);
      $("reason").value = "";
      setProgress(d.progress, d.run);
      setStatus(d.duplicate ? "Already saved." : `Saved: ${NAMES[outcome]}.`, "ok");
      show(d.query);
    } catch (e) {
      setStatus(e.message, "error");
      body.dataset.state = "ready"; setEnabled(true);
    } finally {
      busy = false;
    }
  }

  async function undo() {
    if (busy) return;
    busy = true; body.dataset.state = "busy";
    try {
      const d = await api("/api/undo");
      acks += 1; body.dataset.acks = String(acks);
      setProgress(d.progress, d.run);
      setStatus("Last answer undone: answer it again.", "ok");
      show(d.query);
    } catch (e) {
      setStatus(e.message, "error");
      body.dataset.state = current ? "ready" : "empty";
    } finally {
      busy = false;
    }
  }

  document.querySelectorAll("button[data-outcome]").forEach((b) => {
    b.addEventListener("click", () => { b.blur(); answer(b.dataset.outcome); });
  });
  $("undo").addEventListener("click", (ev) => { ev.currentTarget.blur(); undo(); });
  $("submit-ranking").addEventListener("click", (ev) => { ev.currentTarget.blur(); answer("RANKING"); });
  $("reset-ranking").addEventListener("click", (ev) => { ev.currentTarget.blur(); resetRanking(); });

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) {
      if (ev.key === "Escape") t.blur();
      return;  // typing a reason: keys are text, not answers
    }
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    if (key === "u") { ev.preventDefault(); undo(); return; }
    if (key === "g") { ev.preventDefault(); $("guidelines").open = !$("guidelines").open; return; }
    if (!current) return;
    if (current.kind === "ranking") {
      if (/^[1-9]$/.test(key)) { ev.preventDefault(); pick(Number(key) - 1); }
      else if (key === "Enter") { ev.preventDefault(); answer("RANKING"); }
      else if (key === "r" || key === "Backspace") { ev.preventDefault(); resetRanking(); }
      else if (key === "s") { ev.preventDefault(); answer("SKIP"); }
      else if (key === "c") { ev.preventDefault(); answer("CANT_TELL"); }
      return;
    }
    const outcome = PAIR_KEYS[key];
    if (outcome) { ev.preventDefault(); answer(outcome); }
  });

  body.dataset.acks = "0";
  load();
})();
