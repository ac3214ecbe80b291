// The journy collector's inspector: plain JavaScript, no dependencies, nothing fetched
// from anywhere but this collector. Everything that comes from an event is put on the
// page as text nodes (never parsed as HTML), so a property holding
// "<script>" or "<img onerror=...>" shows as those characters and runs nothing.
"use strict";

const PAGE_SIZE = 100;
const FILTERS = ["type", "user", "account", "name", "q", "warnings"];
const KEY_STORE = "journy-inspector-key";

const state = {
  page: null, // the last page of summaries loaded: {events, matched, latest}
  total: 0, // events matching the filters
  latest: 0, // newest seq the list knows of
  pending: 0, // new matching events not shown (not on the first page)
  stream: null, // AbortController of the live stream
  streamFor: "", // the filter query the stream was opened with
};

// -- helpers -----------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function shortTime(iso) {
  if (!iso) return "";
  return String(iso).replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  if (!key) return {};
  const bytes = new TextEncoder().encode(key + ":");
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return { Authorization: "Basic " + btoa(binary) };
}

class Unauthorized extends Error {}

async function api(path, params) {
  const query = params ? "?" + params.toString() : "";
  const response = await fetch(path + query, { headers: authHeaders(), cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok && response.status !== 404) throw new Error(`${path}: ${response.status}`);
  return response.status === 404 ? null : response.json();
}

function query() {
  return new URLSearchParams(location.search);
}

function filterParams(from) {
  const source = from || query();
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = source.get(name);
    if (value) params.set(name, value);
  }
  return params;
}

function navigate(params, replace) {
  const search = params.toString();
  const url = location.pathname + (search ? "?" + search : "");
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function link(label, params, className) {
  const href = "?" + params.toString();
  return el(
    "a",
    {
      href,
      className,
      onclick: (ev) => {
        if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
        ev.preventDefault();
        navigate(params);
      },
    },
    label,
  );
}

function profileLink(kind, id) {
  if (id === null || id === undefined) return el("span", { className: "muted" }, "-");
  return link(String(id), new URLSearchParams({ view: kind, id: String(id) }));
}

function eventParams(seq) {
  const params = filterParams();
  const before = query().get("before");
  if (before) params.set("before", before);
  params.set("event", String(seq));
  return params;
}

function setLive(stateName, label) {
  const badge = document.getElementById("live");
  badge.dataset.state = stateName;
  badge.textContent = label;
}

function showLogin(message) {
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  setLive("locked", "locked");
  stopStream();
}

// -- the event list --------------------------------------------------------------------

function warningCell(warnings) {
  if (!warnings || !warnings.length) return el("td", { className: "c-warn" });
  const rules = warnings.map((w) => w.rule).join(", ");
  return el("td", { className: "c-warn warn", title: rules }, `\u26A0 ${warnings.length}`);
}

function eventRow(summary, fresh) {
  const user = summary.userId !== null ? summary.userId : summary.anonymousId;
  const row = el(
    "tr",
    {
      dataset: { seq: String(summary.seq) },
      className: fresh ? "fresh" : null,
      onclick: () => navigate(eventParams(summary.seq)),
    },
    el("td", { className: "c-time", title: "received " + text(summary.receivedAt) },
      shortTime(summary.timestamp || summary.receivedAt)),
    el("td", { className: "c-type" },
      el("span", { className: "type type-" + summary.type }, summary.type)),
    el("td", { className: "c-user" }, text(user)),
    el("td", { className: "c-account" }, text(summary.account)),
    el("td", { className: "c-name" }, text(summary.name)),
    warningCell(summary.warnings),
  );
  if (String(summary.seq) === query().get("event")) row.classList.add("selected");
  return row;
}

function updateCount() {
  document.getElementById("count").textContent =
    `${state.total.toLocaleString("en")} event${state.total === 1 ? "" : "s"}`;
}

function updatePager() {
  const rows = document.querySelectorAll("#events tbody tr");
  const before = query().get("before");
  document.getElementById("newer").disabled = !before;
  const oldest = rows.length ? Number(rows[rows.length - 1].dataset.seq) : null;
  const hasOlder = state.page && state.page.events.length >= PAGE_SIZE && oldest !== null;
  document.getElementById("older").disabled = !hasOlder;
  document.getElementById("page-info").textContent = rows.length
    ? `${rows.length} shown of ${state.total.toLocaleString("en")}`
    : "";
  document.getElementById("empty").hidden = rows.length > 0;
}

async function loadList() {
  const params = filterParams();
  const before = query().get("before");
  if (before) params.set("before", before);
  params.set("limit", String(PAGE_SIZE));
  const page = await api("/api/inspector/events", params);
  state.page = page;
  state.total = page.matched;
  state.latest = page.latest;
  state.pending = 0;
  const body = document.querySelector("#events tbody");
  body.replaceChildren(...page.events.map((s) => eventRow(s, false)));
  document.getElementById("new-banner").hidden = true;
  updateCount();
  updatePager();
}

function applyLive(update) {
  if (update.reset) {
    loadList().catch(handleError);
    return;
  }
  state.total += update.matched;
  state.latest = Math.max(state.latest, update.latest);
  updateCount();
  if (document.hidden) {
    // A tab in the background draws nothing; it reloads the newest rows when shown.
    state.stale = true;
    return;
  }
  if (query().get("before")) {
    // Not on the newest page: say how many arrived, without moving the rows being read.
    state.pending += update.matched;
    const banner = document.getElementById("new-banner");
    banner.textContent = `${state.pending} new event${state.pending === 1 ? "" : "s"}: show the newest`;
    banner.hidden = false;
    updatePager();
    return;
  }
  const body = document.querySelector("#events tbody");
  for (const old of body.querySelectorAll("tr.fresh")) old.classList.remove("fresh");
  const rows = update.events.map((s) => eventRow(s, true));
  body.prepend(...rows);
  while (body.children.length > PAGE_SIZE) body.lastElementChild.remove();
  if (state.page) state.page.events = Array.from(body.children);
  updatePager();
}

// -- the live stream (server-sent events read with fetch, so the key can be sent) -------

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.streamFor = "";
}

function startStream() {
  const filters = filterParams().toString();
  if (state.stream && state.streamFor === filters) return;
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  state.streamFor = filters;
  const params = filterParams();
  params.set("after", String(state.latest));
  (async () => {
    try {
      const response = await fetch("/api/inspector/stream?" + params.toString(), {
        headers: authHeaders(),
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.status === 401) throw new Unauthorized();
      if (!response.ok || !response.body) throw new Error("stream " + response.status);
      setLive("live", "live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message
            .split("\n")
            .filter((line) => line.startsWith("data: "))
            .map((line) => line.slice(6))
            .join("\n");
          if (data) applyLive(JSON.parse(data));
        }
      }
      throw new Error("stream ended");
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof Unauthorized) return showLogin("");
      setLive("reconnecting", "reconnecting");
      state.stream = null;
      state.streamFor = "";
      setTimeout(() => {
        if (!state.stream && document.getElementById("profile").hidden) {
          loadList().then(startStream).catch(handleError);
        }
      }, 1000);
    }
  })();
}

// -- event detail ----------------------------------------------------------------------

function warningList(warnings) {
  if (!warnings || !warnings.length) return el("p", { className: "muted" }, "none");
  return el(
    "ul",
    { className: "warnings" },
    warnings.map((w) => el("li", {}, el("code", {}, w.rule), ": ", w.message)),
  );
}

function pairs(entries) {
  return el("dl", {}, entries.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function requestSection(request) {
  if (!request) return el("p", { className: "muted" }, "not recorded (stored by an older collector)");
  return el(
    "div",
    { className: "request" },
    pairs([
      ["request", `${request.method} ${request.path}`],
      ["received", shortTime(request.receivedAt)],
      ["batch size", `${request.batchSize} event${request.batchSize === 1 ? "" : "s"}`],
      ["stored / duplicates", `${request.stored} / ${request.duplicates}`],
      ["gzip", request.gzip ? "yes" : "no"],
      ["retry count", request.retryCount === null ? "0 (no X-Retry-Count)" : String(request.retryCount)],
      ["body size", `${request.size} bytes`],
    ]),
    el("h3", {}, "headers"),
    pairs(Object.entries(request.headers).map(([k, v]) => [k, v])),
  );
}

async function renderDetail(seq) {
  const aside = document.getElementById("detail");
  if (!seq) {
    aside.hidden = true;
    aside.replaceChildren();
    return;
  }
  const detail = await api("/api/inspector/events/" + encodeURIComponent(seq));
  if (!detail) {
    aside.replaceChildren(el("p", {}, `No event ${seq}.`));
    aside.hidden = false;
    return;
  }
  const close = filterParams();
  const before = query().get("before");
  if (before) close.set("before", before);
  const retyped = detail.receivedType !== detail.type
    ? ` (received as ${detail.receivedType})` : "";
  aside.replaceChildren(
    link("close", close, "close"),
    el("h2", {}, `${detail.type}${retyped} · ${text(detail.name) || detail.messageId}`),
    pairs([
      ["messageId", detail.messageId],
      // An account-only group call (anonymousId == groupId) belongs to no user profile.
      ["user", detail.profile === null
        ? el("span", { className: "muted no-user" }, "none: this group call updates the account only")
        : profileLink("user", detail.profile)],
      ["account", detail.account === null ? "-" : profileLink("account", detail.account)],
      ["timestamp", text(detail.timestamp) || "-"],
      ["received", shortTime(detail.receivedAt)],
    ]),
    el("h3", {}, "warnings"),
    warningList(detail.warnings),
    el("h3", {}, "event as stored"),
    el("pre", { className: "json" }, JSON.stringify(detail.event, null, 2)),
    el("h3", {}, "request"),
    requestSection(detail.request),
    el("h3", {}, `duplicates (${detail.duplicates.length})`),
    detail.duplicates.length
      ? el(
        "ul",
        { className: "duplicates" },
        detail.duplicates.map((d) =>
          el(
            "li",
            {},
            `received again ${shortTime(d.receivedAt)}`,
            d.request
              ? ` in a ${d.request.batchSize}-event batch, retry count ${d.request.retryCount === null ? 0 : d.request.retryCount}`
              : "",
          ),
        ),
      )
      : el("p", { className: "muted" }, "none: this messageId arrived once"),
  );
  aside.hidden = false;
}

// -- profiles --------------------------------------------------------------------------

function summaryTable(summaries) {
  if (!summaries.length) return el("p", { className: "muted" }, "none");
  return el(
    "table",
    { className: "recent" },
    el("thead", {}, el("tr", {}, ["time", "type", "user", "account", "name", "rules"].map((h) => el("th", {}, h)))),
    el("tbody", {}, summaries.map((s) => eventRow(s, false))),
  );
}

async function renderProfile(kind, id) {
  const section = document.getElementById("profile");
  const path = kind === "user" ? "/api/inspector/users/" : "/api/inspector/accounts/";
  const profile = await api(path + encodeURIComponent(id));
  if (!profile) {
    section.replaceChildren(el("h2", {}, `No ${kind} ${id}`), link("back to events", filterParams()));
    return;
  }
  const traits = Object.entries(profile.traits);
  const history = profile.history.slice().reverse();
  const title = kind === "user"
    ? `${profile.identified ? "user" : "anonymous user"} ${profile.id}`
    : `account ${profile.id}`;
  const links = kind === "user" ? profile.accounts : profile.members;
  section.replaceChildren(
    link("\u2190 events", new URLSearchParams()),
    el("h2", { className: "profile-title" }, title),
    pairs([
      ["events", kind === "user" ? String(profile.events) : `${profile.events} in its context`],
      // By the events' own timestamps (a backfill is first seen when it happened).
      ["first seen", el("span", { className: "first-seen", title: "first received " + text(profile.firstReceived) }, shortTime(profile.firstSeen))],
      ["last seen", el("span", { className: "last-seen", title: "last received " + text(profile.lastReceived) }, shortTime(profile.lastSeen))],
      ...(kind === "user" && profile.aliases.length ? [["aliases", profile.aliases.join(", ")]] : []),
    ]),
    el("h3", {}, "traits"),
    traits.length
      ? el("table", { className: "traits" },
        el("thead", {}, el("tr", {}, el("th", {}, "trait"), el("th", {}, "value"))),
        el("tbody", {}, traits.map(([k, v]) =>
          el("tr", { dataset: { trait: k } }, el("td", {}, k), el("td", {}, text(v))))))
      : el("p", { className: "muted" }, "none"),
    el("h3", {}, "trait history (newest first)"),
    history.length
      ? el("table", { className: "history" },
        el("thead", {}, el("tr", {}, ["trait", "value", "set by", "timestamp", "received"].map((h) => el("th", {}, h)))),
        el("tbody", {}, history.map((h) =>
          el("tr", { dataset: { trait: h.trait } },
            el("td", {}, h.trait),
            h.deleted ? el("td", { className: "deleted" }, "deleted") : el("td", {}, text(h.value)),
            el("td", { title: h.messageId }, link(`${h.type} ${h.messageId}`, new URLSearchParams({ q: h.messageId }))),
            el("td", {}, text(h.timestamp) || "-"),
            el("td", {}, shortTime(h.receivedAt))))))
      : el("p", { className: "muted" }, "no trait set yet"),
    el("h3", {}, kind === "user" ? "accounts (memberships)" : "members"),
    links.length
      ? el("ul", { className: "memberships" },
        links.map((other) => el("li", {}, profileLink(kind === "user" ? "account" : "user", other))))
      : el("p", { className: "muted" }, "none"),
    // Acting in an account's context does not make a member: only a group call does.
    ...(profile.notGrouped && profile.notGrouped.length
      ? [
        el("h3", {}, kind === "user"
          ? "accounts acted in without a group call (account_not_grouped)"
          : "users in its context without a group call (account_not_grouped)"),
        el("ul", { className: "not-grouped" },
          profile.notGrouped.map((other) => el("li", {}, profileLink(kind === "user" ? "account" : "user", other)))),
      ]
      : []),
    el("h3", {}, kind === "user" ? "recent events" : "events in this account's context"),
    summaryTable(profile.recent),
  );
}

// -- REST calls ------------------------------------------------------------------------

// Every call of the REST API (journy.io's api.journy.io paths), newest first, whatever
// its answer: the events a call stored are in the event list too, with their request.
async function renderRest(before) {
  const section = document.getElementById("rest");
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (before) params.set("before", before);
  const page = await api("/api/inspector/rest", params);
  const calls = page.calls;
  const older = new URLSearchParams({ view: "rest" });
  if (calls.length) older.set("before", String(calls[calls.length - 1].id));
  section.replaceChildren(
    link("\u2190 events", new URLSearchParams()),
    el("h2", {}, `REST calls (${page.total})`),
    calls.length
      ? el("table", { id: "rest-calls" },
        el("thead", {}, el("tr", {}, ["time", "call", "status", "answer", "body"].map((h) => el("th", {}, h)))),
        el("tbody", {}, calls.map((c) =>
          el("tr", { dataset: { id: String(c.id), status: String(c.status) } },
            el("td", { title: c.requestId }, shortTime(c.receivedAt)),
            el("td", {}, `${c.method} ${c.path}`),
            el("td", { className: c.status >= 400 ? "warn" : "" }, String(c.status)),
            el("td", {}, text(c.message)),
            el("td", {}, c.body ? el("details", {}, el("summary", {}, "body"), el("pre", {}, c.body)) : "-")))))
      : el("p", { className: "empty" }, "No REST calls yet. Point journy.io's REST client at this collector."),
    el("nav", { className: "pager" },
      before ? link("\u2190 newest", new URLSearchParams({ view: "rest" })) : "",
      calls.length === PAGE_SIZE ? link("older \u2192", older) : ""),
  );
}

// -- routing ---------------------------------------------------------------------------

function syncFilterForm() {
  const form = document.getElementById("filters");
  const params = query();
  for (const name of FILTERS) {
    const input = form.elements[name];
    if (input.type === "checkbox") input.checked = params.get(name) === "1";
    else input.value = params.get(name) || "";
  }
}

function handleError(error) {
  if (error instanceof Unauthorized) {
    const hadKey = Boolean(sessionStorage.getItem(KEY_STORE));
    sessionStorage.removeItem(KEY_STORE);
    showLogin(hadKey ? "That key is not one of this collector's write keys." : "");
    return;
  }
  console.error(error);
  setLive("error", "error: " + error.message);
}

let renderCount = 0;

async function render() {
  const mine = ++renderCount;
  const params = query();
  const view = params.get("view");
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  const profile = document.getElementById("profile");
  const columns = document.querySelector(".columns");
  const filters = document.getElementById("filters");
  const rest = document.getElementById("rest");
  rest.hidden = view !== "rest";
  try {
    if (view === "rest") {
      stopStream();
      setLive("paused", "REST calls");
      columns.hidden = true;
      filters.hidden = true;
      profile.hidden = true;
      await renderRest(params.get("before"));
      return;
    }
    if (view === "user" || view === "account") {
      stopStream();
      setLive("paused", "profile");
      columns.hidden = true;
      filters.hidden = true;
      profile.hidden = false;
      await renderProfile(view, params.get("id") || "");
      return;
    }
    profile.hidden = true;
    columns.hidden = false;
    filters.hidden = false;
    syncFilterForm();
    const listKey = filterParams().toString() + "|" + (params.get("before") || "");
    if (listKey !== state.listKey) {
      await loadList();
      if (mine !== renderCount) return;
      state.listKey = listKey;
    }
    startStream();
    await renderDetail(params.get("event"));
    for (const row of document.querySelectorAll("#events tbody tr")) {
      row.classList.toggle("selected", row.dataset.seq === params.get("event"));
    }
  } catch (error) {
    handleError(error);
  }
}

function formFilters() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const input = form.elements[name];
    const value = input.type === "checkbox" ? (input.checked ? "1" : "") : input.value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function setup() {
  const form = document.getElementById("filters");
  let timer = null;
  const apply = () => {
    clearTimeout(timer);
    timer = setTimeout(() => navigate(formFilters(), true), 250);
  };
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    navigate(formFilters(), true);
  });
  for (const [id, params] of [["to-events", ""], ["to-rest", "view=rest"]]) {
    document.getElementById(id).addEventListener("click", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
      ev.preventDefault();
      navigate(new URLSearchParams(params));
    });
  }
  document.getElementById("clear-filters").addEventListener("click", () => navigate(new URLSearchParams()));
  document.getElementById("older").addEventListener("click", () => {
    const rows = document.querySelectorAll("#events tbody tr");
    if (!rows.length) return;
    const params = filterParams();
    params.set("before", rows[rows.length - 1].dataset.seq);
    navigate(params);
  });
  document.getElementById("newer").addEventListener("click", () => navigate(filterParams()));
  document.getElementById("new-banner").addEventListener("click", () => navigate(filterParams()));
  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, document.getElementById("login-key").value);
    document.getElementById("login-key").value = "";
    state.listKey = null;
    render();
  });
  window.addEventListener("popstate", () => render());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.stale) {
      state.stale = false;
      if (!query().get("before")) loadList().catch(handleError);
    }
  });
  render();
}

setup();
