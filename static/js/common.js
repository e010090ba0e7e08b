// Shared helpers: translations, JSON API calls with the XSRF token, formatting, DOM building.

const body = document.body;
const strings = JSON.parse(body.dataset.i18n || "{}");
const labels = JSON.parse(body.dataset.labels || '{"types": {}, "events": {}}');
export const lang = body.dataset.lang || "zh";
export const timezone = body.dataset.timezone || "Asia/Shanghai";

/** Translate a text the page's locale knows (the server sends the table). */
export function t(text, values) {
  let out = strings[text] ?? text;
  if (values) {
    for (const [k, v] of Object.entries(values)) out = out.replaceAll(`%(${k})s`, String(v));
  }
  return out;
}

export function xsrfToken() {
  const meta = document.querySelector('meta[name="xsrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function handle(response) {
  if (response.status === 403) {
    // Session ended (logout elsewhere, password changed): back to the login page.
    const data = await response.json().catch(() => ({}));
    if (data.error === "login required") {
      location.href = "/dashboard/login?next=" + encodeURIComponent(location.pathname + location.search);
    }
    throw new ApiError(403, data.error || "forbidden");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error || response.statusText);
  return data;
}

/** GET a JSON API path with query parameters (empty values are left out). */
export async function getJSON(path, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") query.set(k, v);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  return handle(await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }));
}

/** POST JSON with the XSRF token. */
export async function postJSON(path, data = {}) {
  return handle(
    await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-XSRFToken": xsrfToken() },
      body: JSON.stringify(data),
    }),
  );
}

const locale = lang === "en" ? "en-GB" : "zh-CN";
const timeFmt = new Intl.DateTimeFormat(locale, {
  timeZone: timezone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const dateTimeFmt = new Intl.DateTimeFormat(locale, {
  timeZone: timezone, year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", hour12: false,
});
const minuteFmt = new Intl.DateTimeFormat(locale, {
  timeZone: timezone, hour: "2-digit", minute: "2-digit", hour12: false,
});
const dayFmt = new Intl.DateTimeFormat(locale, { timeZone: timezone, month: "2-digit", day: "2-digit" });

export const fmt = {
  time: (iso) => (iso ? timeFmt.format(new Date(iso)) : "–"),
  dateTime: (iso) => (iso ? dateTimeFmt.format(new Date(iso)) : "–"),
  minute: (iso) => (iso ? minuteFmt.format(new Date(iso)) : ""),
  day: (iso) => (iso ? dayFmt.format(new Date(iso)) : ""),
  number: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(locale)),
  percent: (x) => (x === null || x === undefined || Number.isNaN(x) ? "–" : `${(x * 100).toFixed(1)}%`),
  ms: (n) => (n === null || n === undefined ? "" : `${Math.round(n)} ms`),
};

/** Build an element: el("td", {class: "num"}, "text", child, ...). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

/** A message's type in words ("Text", "Follow", "Menu click", ...), in the page's language. */
export function typeLabel(message) {
  if (message.type === "event") return labels.events[message.event] || t("Event: %(name)s", { name: message.event });
  return labels.types[message.type] || message.type;
}

/** The badge for a message type (an event's badge names the event). */
export function typeBadge(message) {
  return el("span", { class: `badge ${message.type}`, dataset: { type: message.type, event: message.event || "" } }, typeLabel(message));
}

/** A message as one line: its text, or "[Location] 广州 (…)" for the other types. */
export function messageText(message) {
  if (message.type === "text") return message.text;
  return `[${typeLabel(message)}]${message.detail ? " " + message.detail : ""}`;
}

export function userCell(openid, testUser) {
  return [
    el("a", { href: `/dashboard/users/${encodeURIComponent(openid)}`, "data-content": true }, openid),
    testUser ? " " : null,
    testUser ? el("span", { class: "badge test" }, t("test")) : null,
  ];
}

/** One row of the message tables (log and live traffic). */
export function messageRow(m) {
  return el(
    "tr",
    { dataset: { id: m.id, type: m.type, user: m.openid } },
    el("td", { class: "time", title: m.received_at }, fmt.dateTime(m.received_at)),
    el("td", {}, typeBadge(m)),
    el("td", {}, userCell(m.openid, m.test_user)),
    el("td", { class: "text", "data-content": true }, m.type === "text" ? m.text : m.detail),
    el("td", { class: "text", "data-content": true }, m.reply_kind === "success" ? el("span", { class: "muted" }, t("(no reply)")) : m.reply),
    el("td", { class: "num" }, fmt.ms(m.latency_ms)),
  );
}

/** Page links: calls go(page) when one is clicked. */
export function renderPager(container, { page, per_page: perPage, total }, go) {
  container.replaceChildren();
  const pages = Math.max(1, Math.ceil(total / perPage));
  const prev = el("button", { type: "button", disabled: page <= 1 }, t("Previous"));
  const next = el("button", { type: "button", disabled: page >= pages }, t("Next"));
  prev.addEventListener("click", () => go(page - 1));
  next.addEventListener("click", () => go(page + 1));
  container.append(prev, el("span", { class: "muted" }, t("Page %(page)s of %(pages)s", { page, pages })), next);
}

/** A form's fields as a plain object; unchecked checkboxes become "0". */
export function formValues(form) {
  const values = {};
  for (const field of form.elements) {
    if (!field.name) continue;
    if (field.type === "checkbox") values[field.name] = field.checked ? "1" : "0";
    else values[field.name] = field.value.trim();
  }
  return values;
}

/** Keep a form in the URL so a reload or a shared link shows the same search. */
export function syncFormWithURL(form) {
  const params = new URLSearchParams(location.search);
  for (const field of form.elements) {
    if (!field.name || !params.has(field.name)) continue;
    if (field.type === "checkbox") field.checked = params.get(field.name) === "1";
    else field.value = params.get(field.name);
  }
}

export function writeURL(values) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== "" && v !== undefined) params.set(k, v);
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

/**
 * A search page: the #filters form (kept in the URL), the #rows table body, #pager and #total.
 * `api` answers {items, total, page, per_page}; `row` draws one item; `empty` is the (translated)
 * text for no results and `totalText(n)` the (translated) count line.
 */
export function searchPage({ api, row, columns, empty, totalText }) {
  const form = document.getElementById("filters");
  const tbody = document.getElementById("rows");
  const pager = document.getElementById("pager");
  const total = document.getElementById("total");

  async function load(page = 1) {
    const values = formValues(form);
    writeURL({ ...values, page });
    // The export takes the same filters (every matching row, not just this page).
    const exportLink = document.getElementById("export");
    if (exportLink) exportLink.search = new URLSearchParams(Object.entries(values).filter(([, v]) => v !== "")).toString();
    const data = await getJSON(api, { ...values, page });
    tbody.replaceChildren(...data.items.map(row));
    if (!data.items.length) tbody.append(el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty)));
    total.textContent = totalText(data.total);
    renderPager(pager, data, load);
  }

  syncFormWithURL(form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(1).catch(console.error);
  });
  load(Number(new URLSearchParams(location.search).get("page")) || 1).catch(console.error);
}

/** "not started", "question k of n", or "finished: <result>". */
export function progressBadge(p) {
  if (p.state === "finished") {
    const result = p.result_title ? [`${t("Finished")}: `, el("span", { "data-content": true }, p.result_title)] : t("Finished");
    return el("span", { class: "badge done", title: p.score !== null && p.score !== undefined ? `${t("Score")} ${p.score}` : "" }, result);
  }
  if (p.state === "screened_out" || p.state === "quota_full") {
    const label = p.state === "screened_out" ? t("Screened out") : t("Quota full");
    return el("span", { class: "badge none", title: p.reason || "" }, label);
  }
  if (p.state === "in_progress") {
    return el("span", { class: "badge progress" }, t("Question %(k)s of %(n)s", { k: p.position, n: p.total }));
  }
  return el("span", { class: "badge none" }, t("Not started"));
}


/**
 * Phones show each table row as a card: every cell is labelled with its column's header
 * (`data-label`, shown by the stylesheet under 600 px). Rows added later are labelled as they
 * come (a MutationObserver on the body of every `table.data`).
 */
export function labelCells(table) {
  const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  const label = (row) => {
    [...row.cells].forEach((cell, i) => {
      if (headers[i] && cell.colSpan === 1) cell.dataset.label = headers[i];
    });
  };
  for (const body of table.tBodies) {
    for (const row of body.rows) label(row);
    new MutationObserver((changes) => {
      for (const change of changes) for (const node of change.addedNodes) if (node instanceof HTMLTableRowElement) label(node);
    }).observe(body, { childList: true });
  }
}

for (const table of document.querySelectorAll("table.data")) labelCells(table);

/**
 * Checkboxes marked `data-preference="<name>"` (e.g. "Include test users") save the owner's
 * choice on the server, so every page opens with it, on every device.
 */
for (const box of document.querySelectorAll("input[type=checkbox][data-preference]")) {
  box.addEventListener("change", () => {
    postJSON("/api/preferences", { [box.dataset.preference]: box.checked }).catch(console.error);
  });
}

// Export links (a[data-export]) take the page's "Pseudonyms instead of openids" box at the
// moment they are followed: the server replaces openids with keyed hashes (service/privacy.py).
document.addEventListener(
  "click",
  (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-export]") : null;
    if (!link) return;
    const box = document.getElementById("pseudonymous");
    const url = new URL(link.href, location.href);
    if (box && box.checked) url.searchParams.set("pseudonymous", "1");
    else url.searchParams.delete("pseudonymous");
    link.href = url.toString();
  },
  true,
);
