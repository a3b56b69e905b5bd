/* alpha-evolve dashboard: hash-routed single page, no dependencies, no build step. */
(function () {
  "use strict";
  const TOKEN = document.querySelector('meta[name="ae-token"]').content;
  const METRICS = ["Sharpe", "Sortino", "Calmar", "MaxDD", "CAGR", "TotalReturn", "AnnVol", "WinRate", "Trades", "Exposure"];
  const SHOWN_METRICS = ["Sharpe", "MaxDD", "CAGR", "Trades"];
  const view = document.getElementById("view");
  const state = { revision: null, route: null, drafts: {}, proposalNode: null, proposalKey: null, busy: false };

  // ------------------------------------------------------------------------------------------ helpers

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (!isFinite(v)) return "–";
      if (Number.isInteger(v)) return String(v);
      return v.toFixed(digits === undefined ? 4 : digits).replace(/\.?0+$/, "") || "0";
    }
    if (typeof v === "boolean") return v ? "true" : "false";
    if (Array.isArray(v)) return "[" + v.map(x => fmt(x, digits)).join(", ") + "]";
    return String(v);
  }

  function shortKey(k) { return String(k).replace(/^(evolution|backtest|pipeline)\./, ""); }
  function badge(status) { return h("span", { class: "badge " + (status || ""), "data-status": status || "" }, (status || "?").replace(/_/g, " ")); }
  function when(iso) { return iso ? String(iso).replace("T", " ").replace(/\.\d+Z?$|Z$/, "") : "–"; }

  function stale(s) { return s.mode === "tracked" && ["running", "awaiting_approval", "stop_requested"].includes(s.status) && !s.alive; }

  function updatesNode(updates) {
    const keys = Object.keys(updates || {});
    if (!keys.length) return h("span", { class: "muted" }, "base config");
    return h("span", { class: "updates" }, keys.map(k => h("code", {}, `${shortKey(k)} = ${fmt(updates[k])}`)));
  }

  function toast(message, bad) {
    const t = document.getElementById("toast");
    t.textContent = message;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  async function api(path, opts) {
    const init = { headers: { Accept: "application/json" }, cache: "no-store", ...(opts || {}) };
    if (init.body !== undefined) {
      init.method = init.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.headers["X-AE-Token"] = TOKEN;
      init.body = JSON.stringify(init.body);
    }
    const res = await fetch(path, init);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const err = new Error((data && data.error) || `HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function runLink(path, text) {
    if (!path) return h("span", { class: "muted" }, "–");
    return h("a", { href: "#/run?path=" + encodeURIComponent(path), title: path }, text || path.split("/").pop());
  }

  // ------------------------------------------------------------------------------------------ router

  function parseRoute() {
    const hash = location.hash.replace(/^#/, "") || "/experiments";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean);
    if (parts[0] === "session" && parts[1]) return { name: "session", id: decodeURIComponent(parts.slice(1).join("/")) };
    if (parts[0] === "runs") return { name: "runs" };
    if (parts[0] === "run") return { name: "run", path: params.get("path") };
    return { name: "experiments" };
  }

  function setTab(name) {
    const tab = name === "runs" || name === "run" ? "runs" : "experiments";
    document.querySelectorAll(".tabs a").forEach(a => a.classList.toggle("active", a.dataset.tab === tab));
  }

  async function route(live) {
    const r = parseRoute();
    const changed = JSON.stringify(r) !== JSON.stringify(state.route);
    state.route = r;
    setTab(r.name);
    if (changed) { state.proposalNode = null; state.proposalKey = null; }
    try {
      if (r.name === "experiments") await renderExperiments();
      else if (r.name === "session") await renderSession(r.id);
      else if (r.name === "runs") { if (!live) await renderRuns(); }
      else if (r.name === "run") { if (!live) await renderRun(r.path); }
    } catch (e) {
      if (!live) view.replaceChildren(h("div", { class: "panel" }, h("p", { class: "error" }, e.message)));
    }
  }

  // ------------------------------------------------------------------------------------------ experiments

  async function renderExperiments() {
    const data = await api("/api/sessions");
    const rows = data.sessions.map(s => h("tr", { class: "clickable", "data-session": s.id,
        onclick: () => { location.hash = "#/session/" + encodeURIComponent(s.id); } },
      h("td", {}, h("a", { href: "#/session/" + encodeURIComponent(s.id) }, s.id)),
      h("td", {}, badge(s.status), stale(s) ? h("span", { class: "badge failed", title: "no heartbeat from its process" }, " not responding") : null),
      h("td", {}, s.mode),
      h("td", {}, `${s.objective} (${s.direction === "maximize" ? "max" : "min"})`),
      h("td", { class: "num" }, s.best_objective === null ? "–" : fmt(s.best_objective)),
      h("td", { class: "num" }, s.best_iteration === null ? "–" : String(s.best_iteration)),
      h("td", { class: "num" }, `${s.iterations_completed} / ${s.iterations_target}`),
      h("td", {}, when(s.created_at)),
      h("td", { class: "small error" }, s.last_error || "")));
    const table = rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "sessions-table" },
      h("thead", {}, h("tr", {}, ["session", "status", "mode", "objective", "best", "best it.", "iterations",
        "created", "last error"].map((t, i) => h("th", { class: [4, 5, 6].includes(i) ? "num" : "" }, t)))),
      h("tbody", {}, rows)))
      : h("p", { class: "muted" }, "No sessions yet. Start one below, or run alpha-evolve self-evolve --mode tracked.");
    const keepForm = view.querySelector("#new-session");
    view.replaceChildren(
      h("h1", {}, "Experiments"),
      h("div", { class: "panel" }, h("h2", {}, "Self-evolution sessions"), table),
      keepForm || newSessionForm());
  }

  function newSessionForm() {
    const err = h("p", { class: "error", id: "new-session-error" });
    const field = (label, input, hint) => h("div", {}, h("label", {}, label), input, hint ? h("div", { class: "hint" }, hint) : null);
    const form = h("form", { class: "grid", id: "new-session-form" },
      field("Base config (TOML)", h("input", { type: "text", name: "config", placeholder: "configs/default.toml (empty: built-in defaults)" })),
      field("Search space (JSON/TOML)", h("input", { type: "text", name: "search_space", placeholder: "empty: the default search space" })),
      field("Iterations after the baseline", h("input", { type: "number", name: "iterations", step: 1, required: true })),
      field("Objective", h("select", { name: "objective" })),
      field("Direction", h("select", { name: "direction" }, h("option", { value: "max" }, "maximise"), h("option", { value: "min" }, "minimise"))),
      field("Seed", h("input", { type: "number", name: "seed", step: 1 })),
      field("Sampler", h("select", { name: "sampler" }, h("option", { value: "random" }, "random"), h("option", { value: "optuna" }, "optuna (TPE)"))),
      field("Exploration probability", h("input", { type: "number", name: "exploration_prob", step: 0.05 })),
      field("Approvals", h("select", { name: "approvals" }, h("option", { value: "manual" }, "manual (approve here)"), h("option", { value: "auto" }, "auto-approve"))));
    const explore = form.querySelector("[name=exploration_prob]"), sampler = form.querySelector("[name=sampler]");
    sampler.addEventListener("change", () => { explore.disabled = sampler.value === "optuna"; });  // TPE explores itself
    // defaults, ranges, choices and help come from the session settings' one declaration (the CLI's); none is
    // written here, so the form cannot drift from the command line
    form.addEventListener("input", e => { e.target.dataset.touched = "1"; });  // a loaded default never overwrites
    form.addEventListener("change", e => { e.target.dataset.touched = "1"; });  // what someone already typed
    api("/api/session-settings").then(({ settings }) => {
      for (const [name, key] of [["search_space", "search_space_path"], ["iterations", "iterations"], ["seed", "seed"], ["exploration_prob", "exploration_prob"], ["sampler", "sampler"], ["objective", "objective"]]) {
        const spec = settings[key], input = form.querySelector(`[name=${name}]`);
        if (!spec || !input || input.dataset.touched) continue;
        if (input.tagName !== "SELECT") {
          if (spec.ge !== null) input.min = spec.ge;
          if (spec.le !== null) input.max = spec.le;
        } else if (name === "objective" && spec.choices) {
          input.replaceChildren(...spec.choices.map(m => h("option", { value: m }, m)));
        }
        if (spec.default !== null) input.value = spec.default;
        input.title = spec.doc;
      }
    }).catch(() => {});
    const submit = h("button", { class: "primary", type: "button", id: "start-session" }, "Start session");
    submit.addEventListener("click", async () => {
      err.textContent = "";
      if (!form.reportValidity()) return;
      const f = new FormData(form);
      const body = {
        config: f.get("config") || null, search_space: f.get("search_space") || null, iterations: parseInt(f.get("iterations"), 10),
        objective: f.get("objective"), minimize: f.get("direction") === "min", seed: parseInt(f.get("seed") || "0", 10),
        sampler: f.get("sampler"), auto_approve: f.get("approvals") === "auto",
      };
      if (f.get("sampler") !== "optuna") body.exploration_prob = parseFloat(f.get("exploration_prob"));
      submit.disabled = true; submit.textContent = "Starting…";
      try {
        const res = await api("/api/sessions", { body });
        toast(`started ${res.session_id} (pid ${res.pid})`);
        location.hash = "#/session/" + encodeURIComponent(res.session_id);
      } catch (e) { err.textContent = e.message; }
      finally { submit.disabled = false; submit.textContent = "Start session"; }
    });
    return h("details", { class: "panel", id: "new-session" }, h("summary", {}, "New session"),
      h("p", { class: "muted small" }, "Runs alpha-evolve self-evolve --mode tracked as a background process; paths are relative to where the dashboard runs."),
      form, h("div", { class: "buttons" }, submit), err);
  }

  // ------------------------------------------------------------------------------------------ session page

  async function renderSession(id) {
    const d = await api("/api/sessions/" + encodeURIComponent(id));
    const s = d.session;
    const maximize = s.direction === "maximize";
    const canStop = ["running", "awaiting_approval", "stop_requested"].includes(s.status) && s.mode === "tracked";
    const stopBtn = canStop ? h("button", { class: "danger", id: "stop-session", onclick: async (ev) => {
      if (!confirm(`Stop session ${s.id}? It stops at the next safe point and can be resumed.`)) return;
      ev.target.disabled = true;
      try { await api(`/api/sessions/${encodeURIComponent(s.id)}/stop`, { body: {} }); toast("stop requested"); refresh(); }
      catch (e) { toast(e.message, true); ev.target.disabled = false; }
    } }, "Stop session") : null;
    const exportLink = s.best_iteration !== null
      ? h("a", { class: "button", id: "export-toml", href: `/api/sessions/${encodeURIComponent(s.id)}/best.toml`, download: `${s.id}_best.toml` }, "Export best config (TOML)")
      : null;
    const header = h("div", { class: "panel" },
      h("div", { class: "small" }, h("a", { href: "#/experiments" }, "← all sessions")),
      h("h1", {}, s.id, " ", badge(s.status)),
      h("dl", { class: "kv" },
        h("dt", {}, "objective"), h("dd", {}, `${s.objective} (${maximize ? "maximise" : "minimise"})`),
        h("dt", {}, "best"), h("dd", { id: "best" }, s.best_iteration === null ? "–" : `${fmt(s.best_objective)} at iteration ${s.best_iteration}`),
        h("dt", {}, "iterations"), h("dd", { id: "iterations-done" }, `${s.iterations_completed} / ${s.iterations_target}`),
        h("dt", {}, "mode"), h("dd", {}, s.mode + (s.source_dir ? ` (imported from ${s.source_dir})` : "")),
        h("dt", {}, "sampler, seed"), h("dd", {}, `${s.sampler || "–"}, ${fmt(s.seed)}`),
        h("dt", {}, "search space"), h("dd", {}, s.search_space_path || "–"),
        h("dt", {}, "config"), h("dd", {}, s.config_path || "built-in defaults"),
        h("dt", {}, "data hash"), h("dd", {}, s.data_hash || "–"),
        h("dt", {}, "artefacts"), h("dd", {}, s.artifact_dir || "–"),
        h("dt", {}, "updated"), h("dd", {}, when(s.updated_at) + (s.owner_pid ? ` · driven by pid ${s.owner_pid}` : "")),
        s.last_error ? h("dt", {}, "last error") : null, s.last_error ? h("dd", { class: "error" }, s.last_error) : null),
      stale(s) ? h("p", { class: "notice", id: "stale-notice" }, `No process is driving this session (last heartbeat ${when(s.heartbeat_at)}). ` +
        `Resume it with: alpha-evolve self-evolve --mode tracked --resume ${s.id} (same --registry-db), or Stop it to mark it stopped.`) : null,
      h("div", { class: "buttons" }, stopBtn, exportLink));

    const chartBox = h("div", { id: "objective-chart" });
    const ok = d.iterations.filter(it => it.success && it.objective !== null);
    let best = null;
    const bestLine = [];
    for (const it of d.iterations) {
      if (it.success && it.objective !== null && (best === null || (maximize ? it.objective > best : it.objective < best))) best = it.objective;
      if (best !== null) bestLine.push([it.iteration, best]);
    }
    const chartPanel = h("div", { class: "panel" }, h("h2", {}, `${s.objective} per iteration`), chartBox);
    AEChart.render(chartBox, {
      integerX: true, xMin: 0, xMax: s.iterations_target, xLabel: "iteration", yLabel: s.objective, height: 260,
      title: "objective per iteration",
      series: [
        { name: s.objective, points: ok.map(it => [it.iteration, it.objective, `iteration ${it.iteration}: ${fmt(it.objective)}`]), kind: "line", showPoints: true, color: "#2f6fed" },
        { name: "best so far", points: bestLine, kind: "step", dash: "6 4", color: "#2b8a3e", width: 1.5 },
      ],
      empty: "no finished iteration yet (the baseline runs first)",
    });

    const proposal = proposalPanel(d);
    const iterTable = h("div", { class: "panel" }, h("h2", {}, "Iterations"), iterationsTable(d, s));
    const history = proposalsHistory(d);
    view.replaceChildren(header, proposal, chartPanel, iterTable, history);
  }

  function iterationsTable(d, s) {
    if (!d.iterations.length) return h("p", { class: "muted" }, "No iteration finished yet.");
    return h("div", { class: "table-wrap" }, h("table", { id: "iterations-table" },
      h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), h("th", {}, "updates"), h("th", { class: "num" }, s.objective),
        SHOWN_METRICS.filter(m => m !== s.objective).map(m => h("th", { class: "num" }, m)), h("th", {}, "result"),
        h("th", {}, "decision"), h("th", { class: "num" }, "run time"), h("th", {}, "run"))),
      h("tbody", {}, d.iterations.map(it => h("tr", { class: it.iteration === s.best_iteration ? "best" : "", "data-iteration": it.iteration },
        h("td", { class: "num" }, String(it.iteration)),
        h("td", {}, it.kind === "baseline" ? h("span", { class: "muted" }, "baseline") : updatesNode(it.config_updates)),
        h("td", { class: "num" }, fmt(it.objective)),
        SHOWN_METRICS.filter(m => m !== s.objective).map(m => h("td", { class: "num" }, fmt((it.metrics || {})[m]))),
        h("td", {}, it.success ? badge("ok") : h("span", {}, badge("failed"), " ", h("span", { class: "small" }, it.failure_reason || ""))),
        h("td", { class: "small" }, it.decision ? `${it.decision.status}${it.decision.edited ? " (edited)" : ""}${it.decision.notes ? " — " + it.decision.notes : ""}` : "–"),
        h("td", { class: "num" }, it.run_seconds === null || it.run_seconds === undefined ? "–" : `${fmt(it.run_seconds, 1)} s`),
        h("td", {}, runLink(it.run_dir, "open run")))))));
  }

  function proposalsHistory(d) {
    const decided = d.proposals.filter(p => !d.pending || p.action_id !== d.pending.action_id);
    if (!decided.length) return h("div");
    return h("details", { class: "panel" }, h("summary", {}, `Proposals (${decided.length})`),
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["iteration", "attempt", "status", "proposed", "decided by", "when", "notes"].map(t => h("th", {}, t)))),
        h("tbody", {}, decided.map(p => h("tr", {},
          h("td", {}, String(p.iteration)), h("td", {}, String(p.attempt)), h("td", {}, badge(p.status)),
          h("td", {}, updatesNode(p.proposed_updates)), h("td", {}, p.decided_by || "–"), h("td", {}, when(p.decided_at)),
          h("td", { class: "small" }, p.notes || "")))))));
  }

  function inputFor(param, value, baseValue) {
    const key = param.key;
    const attrs = { "data-key": key, id: "cand-" + key.replace(/[^A-Za-z0-9_-]/g, "_"), name: key };
    let input;
    // the base config's own value may lie outside the space: it stays selectable, unchanged values are never refused
    const choices = (param.values || []).slice();
    const inSpace = choices.some(v => JSON.stringify(v) === JSON.stringify(value));
    const options = () => [
      ...(inSpace ? [] : [h("option", { value: JSON.stringify(value) }, `${fmt(value)} (current, outside the space)`)]),
      ...choices.map(v => h("option", { value: JSON.stringify(v) }, fmt(v)))];
    if (param.keys && param.keys.length > 1) {
      attrs["data-keys"] = JSON.stringify(param.keys);
      input = h("select", attrs, options());
      input.value = JSON.stringify(value);
    } else if (param.type === "choice") {
      input = h("select", attrs, options());
      input.value = JSON.stringify(value);
    } else if (param.type === "bool_toggle") {
      input = h("select", attrs, h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
      input.value = value ? "true" : "false";
    } else {
      const isInt = param.type === "int_range";
      const v = typeof value === "number" ? value : null;
      // off-grid values are allowed (the server checks min/max only), so the browser's step check is loosened
      input = h("input", { ...attrs, type: "number", required: true, step: isInt ? 1 : "any",
        min: v === null ? param.min : Math.min(param.min, v), max: v === null ? param.max : Math.max(param.max, v),
        value: v === null ? "" : String(v), "data-int": isInt ? "1" : null, "data-min": param.min, "data-max": param.max });
    }
    input.dataset.type = param.type;
    input.dataset.original = JSON.stringify(value);
    const range = param.values ? `one of ${param.values.map(v => fmt(v)).join(", ")}`
      : param.type === "bool_toggle" ? "true or false" : `${fmt(param.min)} … ${fmt(param.max)}${param.step ? `, step ${fmt(param.step)}` : ""}`;
    return h("div", { class: "param" },
      h("label", { for: attrs.id, title: param.description || "" }, h("span", { class: "key" }, shortKey(key)),
        baseValue !== undefined ? ` (base ${fmt(baseValue)})` : ""),
      input, h("div", { class: "hint" }, range));
  }

  function readInput(input) {
    const t = input.dataset.type;
    if (input.tagName === "SELECT") return JSON.parse(input.value);
    if (t === "bool_toggle") return input.value === "true";
    const raw = input.value.trim();
    if (raw === "") return null;
    const n = Number(raw);
    return Number.isFinite(n) ? n : null;
  }

  function proposalPanel(d) {
    const p = d.pending;
    if (!p) {
      state.proposalNode = null; state.proposalKey = null;
      const s = d.session;
      const ph = s.phase || {};
      const msg = s.status === "running" && ph.phase === "running"
        ? `Iteration ${ph.iteration} is running (started ${when(ph.started_at)}); the next proposal appears here when it ends.`
        : s.status === "running" ? "No decision needed right now: the session is working."
        : s.status === "completed" ? "The session is complete." : `The session is ${s.status.replace(/_/g, " ")}.`;
      return h("div", { class: "panel", id: "proposal" }, h("h2", {}, "Proposal"), h("p", { class: "muted", id: "no-proposal" }, msg));
    }
    const key = [p.action_id, p.problem || "", d.can_decide].join("|");
    if (state.proposalNode && state.proposalKey === key) return state.proposalNode;  // keep what is being edited
    const draft = state.drafts[p.action_id] || (state.drafts[p.action_id] = { values: {}, notes: "" });
    const params = h("div", { class: "params" });
    for (const param of d.space) {
      const keys = param.keys || [param.key];
      const value = keys.length > 1 ? keys.map(k => p.candidate[k]) : p.candidate[param.key];
      const base = keys.length > 1 ? undefined : p.base[param.key];
      const node = inputFor(param, value, base);
      const input = node.querySelector("[data-key]");
      if (draft.values[param.key] !== undefined) input.value = draft.values[param.key];
      const mark = () => input.classList.toggle("changed", JSON.stringify(safeRead(input)) !== input.dataset.original);
      input.addEventListener("input", () => { draft.values[param.key] = input.value; mark(); });
      input.addEventListener("change", () => { draft.values[param.key] = input.value; mark(); });
      mark();
      if (!d.can_decide) input.disabled = true;
      params.appendChild(node);
    }
    const notes = h("textarea", { id: "decision-notes", placeholder: "Why? (recorded with the decision)", maxlength: 4000 });
    notes.value = draft.notes;
    notes.addEventListener("input", () => { draft.notes = notes.value; });
    const err = h("p", { class: "error", id: "decision-error" }, p.problem ? `The session refused the last answer: ${p.problem}` : "");
    const send = async (decision, btn) => {
      err.textContent = "";
      const candidate = { ...p.candidate };
      for (const input of params.querySelectorAll("[data-key]")) {
        const v = readInput(input);
        const unchanged = JSON.stringify(v) === input.dataset.original;
        if (input.tagName === "INPUT" && !unchanged) {
          const lo = Number(input.dataset.min), hi = Number(input.dataset.max), range = `[${fmt(lo)}, ${fmt(hi)}]`;
          const name = shortKey(input.dataset.key), isInt = input.dataset.int === "1";
          // say what is wrong with the value itself (empty, not a whole number, out of range) in the space's terms
          const problem = v === null ? `enter a ${isInt ? "whole number" : "number"} in ${range}`
            : isInt && !Number.isInteger(v) ? `${fmt(v)} is not a whole number (expected an integer in ${range})`
            : v < lo || v > hi ? `${fmt(v)} is outside ${range}`
            : !input.checkValidity() ? `${fmt(v)}: ${input.validationMessage}` : null;
          if (problem) {
            err.textContent = `${name}: ${problem}`;
            input.focus();
            return;
          }
        }
        if (input.dataset.keys) JSON.parse(input.dataset.keys).forEach((k, i) => { candidate[k] = v[i]; });
        else candidate[input.dataset.key] = v;
      }
      panel.querySelectorAll("button").forEach(b => { b.disabled = true; });
      try {
        await api(`/api/sessions/${encodeURIComponent(d.session.id)}/decision`,
          { body: { action_id: p.action_id, decision, notes: notes.value || null, candidate: decision === "approved" ? candidate : null } });
        delete state.drafts[p.action_id];
        toast(`${decision} iteration ${p.iteration}`);
        state.proposalNode = null; state.proposalKey = null;
        refresh();
      } catch (e) {
        err.textContent = e.message;
        panel.querySelectorAll("button").forEach(b => { b.disabled = false; });
      }
    };
    const approve = h("button", { class: "primary", id: "approve", disabled: !d.can_decide }, "Approve");
    const reject = h("button", { class: "danger", id: "reject", disabled: !d.can_decide }, "Reject");
    approve.addEventListener("click", () => send("approved", approve));
    reject.addEventListener("click", () => send("rejected", reject));
    const panel = h("div", { class: "panel highlight", id: "proposal", "data-action-id": p.action_id },
      h("h2", {}, `Proposal for iteration ${p.iteration}`, p.attempt > 1 ? ` (attempt ${p.attempt})` : "", " ", badge("pending")),
      p.summary ? h("p", { class: "analysis" }, p.summary) : null,
      p.analysis ? h("details", {}, h("summary", {}, "Briefing"), h("p", { class: "analysis" }, p.analysis)) : null,
      h("h3", {}, "Candidate (edit within the search space)"),
      h("p", { class: "small muted" }, "Proposed changes: ", updatesNode(p.proposed_updates), ` — from the ${p.base_kind || "base"} config`),
      params,
      h("h3", {}, "Notes"), notes,
      d.session.mode !== "tracked" ? h("p", { class: "notice" }, `Imported legacy session: decide by editing ${d.session.source_dir}/pending_action.json or with alpha-evolve approve.`) : null,
      d.session.mode === "tracked" && !d.can_decide ? h("p", { class: "notice", id: "cannot-decide" },
        `The session is ${d.session.status.replace(/_/g, " ")}: nobody is waiting for this decision. ` +
        `Resume it with alpha-evolve self-evolve --resume ${d.session.id}, and the proposal comes back here.`) : null,
      h("div", { class: "buttons" }, approve, reject), err);
    state.proposalNode = panel; state.proposalKey = key;
    return panel;
  }

  function safeRead(input) { try { return readInput(input); } catch (e) { return null; } }

  // ------------------------------------------------------------------------------------------ runs

  function nodesTable(nodes, id) {
    return h("div", { class: "table-wrap" }, h("table", { id: id, class: "nodes" },
      h("thead", {}, h("tr", {}, ["node", "host", "slots", "in flight", "done", "lost", "state"].map(t => h("th", {}, t)))),
      h("tbody", {}, (nodes || []).map(n => h("tr", {},
        h("td", { class: "mono" }, String(n.node_id || "local").slice(0, 12)), h("td", {}, `${n.host || ""} ${n.address || ""}`),
        h("td", { class: "num" }, fmt(n.slots)), h("td", { class: "num" }, fmt(n.in_flight)), h("td", { class: "num" }, fmt(n.done)),
        h("td", { class: "num" }, fmt(n.lost)), h("td", {}, n.alive === false ? `lost ${n.note || ""}` : "live"))))));
  }

  // Where candidates run (cluster backend): refreshed every 2 s while the panel is on the page.
  function placementPanel() {
    const box = h("div", { class: "panel", id: "placement" }, h("h2", {}, "Where candidates run"), h("p", { class: "muted" }, "loading…"));
    async function tick() {
      if (!document.body.contains(box) && box.dataset.started) return;
      box.dataset.started = "1";
      try {
        const d = await api("/api/evaluation");
        const items = d.placements.filter(p => p.running).concat(d.placements.filter(p => !p.running).slice(0, 3));
        box.replaceChildren(h("h2", {}, "Where candidates run"), items.length ? h("div", {}, items.map(p => h("div", { class: "placement" },
          h("p", {}, h("strong", {}, p.run), " ", badge(p.running ? "running" : "finished"),
            ` ${p.backend || "ray"}: ${fmt(p.live_nodes)} live node(s), ${fmt(p.slots)} slots, ${fmt(p.in_flight)} in flight, ${fmt(p.done)} done, ${fmt(p.retries)} retried, ${fmt(p.crashes)} lost`),
          nodesTable(p.nodes, "nodes-" + p.run)))) : h("p", { class: "muted" }, "No cluster run yet (backend = ray writes evaluation_nodes.json into its run)."));
      } catch (e) { box.replaceChildren(h("h2", {}, "Where candidates run"), h("p", { class: "error" }, e.message)); }
      setTimeout(tick, 2000);
    }
    tick();
    return box;
  }

  async function renderRuns() {
    const data = await api("/api/runs");
    const rows = data.runs.map(r => h("tr", {},
      h("td", {}, runLink(r.path, r.name)), h("td", {}, badge(r.status)), h("td", {}, r.experiment || "–"),
      h("td", {}, when(r.started_at)), h("td", { class: "num" }, r.elapsed_seconds ? `${fmt(r.elapsed_seconds, 1)} s` : "–"),
      h("td", {}, r.objective || "–"), h("td", { class: "num" }, fmt(r.objective_value)),
      h("td", {}, r.has_programs ? "programs.sqlite" : "–"), h("td", { class: "small" }, r.reason || "")));
    view.replaceChildren(h("h1", {}, "Runs & programs"), placementPanel(), h("div", { class: "panel" },
      h("p", { class: "muted small" }, "Pipeline runs recorded by sessions, and run_* folders under: " + (data.roots.join(", ") || "–")),
      rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "runs-table" }, h("thead", {}, h("tr", {},
        ["run", "status", "experiment", "started", "elapsed", "objective", "validation value", "evolution", "reason"].map(t => h("th", {}, t)))),
        h("tbody", {}, rows))) : h("p", { class: "muted" }, "No runs found.")));
  }

  async function renderRun(path) {
    const d = await api("/api/run?path=" + encodeURIComponent(path || ""));
    const s = d.summary || {};
    const head = d.headline;
    const obj = head.objective;
    const metricRows = METRICS.map(m => h("tr", {}, h("td", {}, m),
      h("td", { class: "num" }, fmt((s.best_metrics || {})[m])), h("td", { class: "num" }, fmt((s.train_metrics || {})[m])),
      h("td", { class: "num" }, fmt(((s.seed_metrics || {}).validation || {})[m])), h("td", { class: "num" }, fmt((s.buy_and_hold_metrics || {})[m]))));
    const counts = s.counts || {};
    const header = h("div", { class: "panel" },
      h("div", { class: "small" }, h("a", { href: "#/runs" }, "← all runs")),
      h("h1", {}, head.name, " ", badge(head.status)),
      s.reason ? h("p", { class: "error" }, s.reason) : null,
      h("div", { class: "row" },
        h("dl", { class: "kv grow" },
          h("dt", {}, "experiment"), h("dd", {}, s.experiment || "–"),
          h("dt", {}, "started"), h("dd", {}, when(s.started_at)),
          h("dt", {}, "elapsed"), h("dd", {}, s.elapsed_seconds ? `${fmt(s.elapsed_seconds, 1)} s` : "–"),
          h("dt", {}, "objective"), h("dd", {}, `${obj} on ${(s.objective || {}).split || "validation"}`),
          h("dt", {}, "data"), h("dd", {}, ((s.data || {}).source || "–") + ((s.data || {}).symbols ? ` [${s.data.symbols.join(", ")}]` : "")),
          h("dt", {}, "evaluations"), h("dd", {}, `${fmt(counts.evaluations)} (${fmt(counts.successful_evaluations)} ok), iterations ${fmt(counts.iterations)}`),
          h("dt", {}, "overfitting"), h("dd", {}, s.overfitting ? `PSR ${fmt(s.overfitting.probabilistic_sharpe, 3)}, DSR ${fmt(s.overfitting.deflated_sharpe, 3)} over ${s.overfitting.n_trials} trials` : "–"),
          h("dt", {}, "holdout"), h("dd", { id: "holdout-looks" }, head.holdout_openings ? `opened ${head.holdout_openings} time(s) — every look is in holdout_ledger.jsonl` : "sealed (0 looks)"),
          h("dt", {}, "verdict"), h("dd", { id: "run-verdict" }, (s.verdict || {}).statement || "–"),
          h("dt", {}, "folder"), h("dd", {}, head.path)),
        s.best_metrics && Object.keys(s.best_metrics).length ? h("div", { class: "grow" }, h("table", { id: "run-metrics" },
          h("thead", {}, h("tr", {}, h("th", {}, "metric"), h("th", { class: "num" }, "best (validation)"), h("th", { class: "num" }, "best (train)"),
            h("th", { class: "num" }, "seed"), h("th", { class: "num" }, "buy & hold"))), h("tbody", {}, metricRows))) : null));
    const equityBox = h("div", { id: "equity-chart" }, h("p", { class: "muted" }, "loading…"));
    const parts = [header];
    if (d.has_equity) parts.push(h("div", { class: "panel" }, h("h2", {}, "Equity curves (validation period)"), equityBox));
    if (s.evaluation) parts.push(h("div", { class: "panel" }, h("h2", {}, `Where candidates ran (${s.evaluation.backend})`),
      s.evaluation.backend === "ray" ? h("p", { class: "muted small" }, `${fmt(s.evaluation.done)} tasks done, ${fmt(s.evaluation.retries)} retried after a lost node, ${fmt(s.evaluation.crashes)} recorded as crash`) : null,
      nodesTable(s.evaluation.nodes, "run-nodes")));
    if (d.top_programs.length) {
      const cols = ["rank", "program_id", "iteration", "generation", "parent_id", "mutator", "fitness", `train_${obj}`, `validation_${obj}`, "validation_MaxDD", "validation_Trades", "validation_status"];
      parts.push(h("div", { class: "panel" }, h("h2", {}, "Top programs"), h("div", { class: "table-wrap" }, h("table", { id: "top-programs" },
        h("thead", {}, h("tr", {}, cols.map(c => h("th", {}, c.replace(/_/g, " "))))),
        h("tbody", {}, d.top_programs.map(r => h("tr", {}, cols.map(c => h("td", { class: typeof r[c] === "number" ? "num" : "" }, fmt(r[c]))))))))));
    }
    parts.push(h("details", { class: "panel" }, h("summary", {}, "SUMMARY.json"),
      h("pre", { class: "code", id: "summary-json" }, JSON.stringify(s, null, 2))));
    if (d.best_code) parts.push(h("details", { class: "panel", open: true }, h("summary", {}, "Best strategy (best_strategy.py)"), h("pre", { class: "code", id: "best-code" }, d.best_code)));
    const evoBox = h("div", { id: "evolution" });
    if (d.has_programs) parts.push(h("div", { class: "panel" }, h("h2", {}, "Evolution (programs.sqlite)"), evoBox));
    view.replaceChildren(...parts);
    if (d.has_equity) {
      api("/api/run/equity?path=" + encodeURIComponent(path)).then(eq => {
        AEChart.render(equityBox, { xType: "time", yLabel: "equity", height: 320, title: "equity curves",
          series: eq.series.map(se => ({ name: se.name, kind: "line", width: se.name.startsWith("rank1") ? 2.5 : 1.5,
            dash: se.name === "buy_and_hold" ? "6 4" : (se.name === "seed" ? "2 3" : "none"),
            points: eq.timestamps.map((t, i) => [t, se.values[i]]) })) });
      }).catch(e => { equityBox.replaceChildren(h("p", { class: "error" }, e.message)); });
    }
    if (d.has_programs) {
      api("/api/run/programs?path=" + encodeURIComponent(path)).then(ev => renderEvolution(evoBox, ev))
        .catch(e => { evoBox.replaceChildren(h("p", { class: "error" }, e.message)); });
    }
  }

  function renderEvolution(box, ev) {
    box.replaceChildren();
    for (const exp of ev.experiments) {
      const chart = h("div", { class: "fitness-chart" });
      const ok = exp.points.filter(p => p.status === "ok" && p.fitness !== null);
      const bestLine = [];
      let best = null;
      for (const p of exp.points) {
        if (p.status === "ok" && p.fitness !== null && (best === null || p.fitness > best)) best = p.fitness;
        if (best !== null) bestLine.push([p.iteration, best]);
      }
      const failed = exp.points.length - ok.length;
      const codeBox = h("pre", { class: "code", id: "lineage-code" });
      const info = h("p", { class: "small muted", id: "lineage-info" });
      const nodes = exp.lineage.map((p, i) => {
        const node = h("span", { class: "node", "data-program": p.id, title: p.mutator || "" },
          `#${p.id} · it ${fmt(p.iteration)} · ${fmt(p.fitness, 3)}`);
        node.addEventListener("click", () => select(i));
        return node;
      });
      function select(i) {
        nodes.forEach((n, j) => n.classList.toggle("sel", i === j));
        const p = exp.lineage[i];
        info.textContent = `program #${p.id} (generation ${p.generation}, ${p.mutator || "seed"}): fitness ${fmt(p.fitness)}, ` +
          Object.entries(p.metrics || {}).filter(([k]) => SHOWN_METRICS.includes(k)).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
        codeBox.textContent = p.code;
      }
      const chain = h("div", { class: "lineage" });
      nodes.forEach((n, i) => { if (i) chain.appendChild(h("span", { class: "arrow" }, "→")); chain.appendChild(n); });
      box.appendChild(h("div", {},
        h("h3", {}, `Experiment ${exp.name} `, badge(exp.status)),
        h("p", { class: "small muted" }, `${exp.points.length} programs: ` + Object.entries(exp.counts).map(([k, v]) => `${v} ${k}`).join(", ") +
          (failed ? ` — failures are not plotted` : "")),
        chart,
        h("h3", {}, "Lineage of the best program by train fitness (seed → best)"), chain, info, codeBox));
      AEChart.render(chart, { integerX: true, xLabel: "iteration", yLabel: "fitness (train)", height: 260, title: "fitness over iterations",
        series: [
          { name: "program fitness", kind: "points", radius: 3.5, opacity: 0.6, color: "#2f6fed",
            points: ok.map(p => [p.iteration, p.fitness, `program #${p.id}, iteration ${p.iteration}: ${fmt(p.fitness)}`]) },
          { name: "best so far", kind: "step", color: "#2b8a3e", points: bestLine },
        ] });
      if (nodes.length) select(nodes.length - 1);
    }
    if (!ev.experiments.length) box.appendChild(h("p", { class: "muted" }, "No experiment in programs.sqlite."));
  }

  // ------------------------------------------------------------------------------------------ live updates

  function refresh() { route(true); }

  async function poll() {
    const live = document.getElementById("live");
    try {
      const r = await api("/api/revision");
      live.classList.remove("stale");
      live.title = `live: registry revision ${r.revision}`;
      if (state.revision !== null && r.revision !== state.revision) await route(true);
      state.revision = r.revision;
    } catch (e) {
      live.classList.add("stale");
      live.title = "dashboard server unreachable: " + e.message;
    }
    setTimeout(poll, 1000);
  }

  window.addEventListener("hashchange", () => route(false));
  route(false).then(poll);
})();
