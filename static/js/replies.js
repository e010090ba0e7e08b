// The auto-reply editor: ordered rules (add, reorder, switch off, delete) and the special
// replies, each reply of any kind WeChat's passive reply supports. The server validates the whole
// definition on save (every mistake listed, nothing half-applied); a text's size shows as you type.

import { el, fmt, getJSON, t, xsrfToken } from "./common.js";

const rulesList = document.getElementById("rules");
const specials = document.getElementById("specials");
const issuesList = document.getElementById("replies-issues");
const statusLine = document.getElementById("replies-status");
let state = null; // {version, data, surveys, limits}
const encoder = new TextEncoder();

const KIND_LABELS = {
  text: () => t("Text"),
  image: () => t("Image"),
  voice: () => t("Voice"),
  video: () => t("Video"),
  music: () => t("Music"),
  news: () => t("News"),
  survey: () => t("Survey"),
  greeting: () => t("Greeting (你好 in six languages)"),
  configured: () => t("The configured image"),
};
const MATCH_LABELS = { exact: () => t("is exactly"), contains: () => t("contains"), regex: () => t("matches the regular expression") };

function setStatus(text) {
  statusLine.textContent = text;
}

function kindOf(reply) {
  if (reply === "greeting" || reply === "configured") return reply;
  if (typeof reply === "string") return "text";
  return Object.keys(reply)[0];
}

function blank(kind) {
  switch (kind) {
    case "text": return { text: "" };
    case "image": case "voice": return { [kind]: "" };
    case "video": return { video: { media_id: "", title: "", description: "" } };
    case "music": return { music: { title: "", description: "", url: "", hq_url: "", thumb_media_id: "" } };
    case "news": return { news: [{ title: "", description: "", picurl: "", url: "" }] };
    case "survey": return { survey: state.surveys[0]?.id || "" };
    default: return kind;
  }
}

// The media library's permanent material, offered in the media_id fields (a datalist per kind).
async function loadMedia() {
  for (const kind of ["image", "voice", "video"]) {
    let data = null;
    try {
      data = await getJSON("/api/media", { type: kind });
    } catch {
      return; // WeChat unreachable: the fields stay plain text
    }
    if (!data.configured) return;
    document.body.append(el("datalist", { id: `media-${kind}` },
      ...data.items.map((m) => el("option", { value: m.media_id }, m.name))));
  }
}

function input(label, value, onInput, attrs = {}) {
  const field = el("input", { type: "text", value: value || "", ...attrs });
  field.addEventListener("input", () => onInput(field.value));
  return el("label", { class: "field" }, el("span", {}, label), field);
}

function textArea(value, onInput) {
  const limit = state.limits.text_bytes;
  const counter = el("span", { class: "muted counter" });
  const area = el("textarea", { rows: 3, class: "reply-text" });
  area.value = value || "";
  const count = () => {
    const bytes = encoder.encode(area.value).length;
    counter.textContent = t("%(n)s / %(max)s bytes", { n: bytes, max: limit });
    counter.classList.toggle("over", bytes > limit);
  };
  area.addEventListener("input", () => { onInput(area.value); count(); });
  count();
  return el("div", { class: "field" }, area, counter);
}

/** An editor for one reply; ``set(reply)`` is called with the new value on every change. */
function replyEditor(reply, set, kinds) {
  const box = el("div", { class: "reply-editor" });
  const render = () => {
    const kind = kindOf(reply);
    const select = el("select", { class: "reply-kind", "aria-label": t("Reply kind") },
      ...kinds.map((k) => el("option", { value: k, selected: k === kind }, KIND_LABELS[k]())));
    select.addEventListener("change", () => { reply = blank(select.value); set(reply); render(); });
    const body = el("div", { class: "reply-body" });
    const update = (fn) => { fn(); set(reply); };
    if (kind === "text") {
      if (typeof reply === "string") reply = { text: reply };
      body.append(textArea(reply.text, (v) => update(() => { reply.text = v; })));
    } else if (kind === "image" || kind === "voice") {
      body.append(input(t("Permanent media_id"), reply[kind], (v) => update(() => { reply[kind] = v; }), { class: "media-id", list: `media-${kind}`, title: t("Pick from the media library") }));
    } else if (kind === "video" || kind === "music") {
      const fields = state.limits.kinds[kind];
      const names = {
        media_id: t("Permanent media_id"), title: t("Title"), description: t("Description"),
        url: t("Music URL"), hq_url: t("HQ music URL (Wi-Fi)"), thumb_media_id: t("Thumbnail media_id"),
      };
      const lists = { media_id: `media-${kind}`, thumb_media_id: "media-image" };
      for (const f of fields) body.append(input(names[f], reply[kind][f], (v) => update(() => { reply[kind][f] = v; }), lists[f] ? { list: lists[f] } : {}));
    } else if (kind === "news") {
      body.append(el("p", { class: "muted" }, t("WeChat shows only the first article of a passive reply.")));
      reply.news.forEach((article, i) => {
        const item = el("fieldset", { class: "article" }, el("legend", {}, t("Article %(n)s", { n: i + 1 })));
        for (const [f, label] of [["title", t("Title")], ["description", t("Description")], ["picurl", t("Picture URL")], ["url", t("Link URL")]]) {
          item.append(input(label, article[f], (v) => update(() => { article[f] = v; })));
        }
        if (reply.news.length > 1) {
          item.append(el("button", { type: "button", class: "link", onclick: () => { reply.news.splice(i, 1); set(reply); render(); } }, t("Remove article")));
        }
        body.append(item);
      });
      if (reply.news.length < state.limits.news_articles) {
        body.append(el("button", { type: "button", onclick: () => { reply.news.push({ title: "", description: "", picurl: "", url: "" }); set(reply); render(); } }, t("Add an article")));
      }
    } else if (kind === "survey") {
      const choose = el("select", { class: "survey-id" },
        ...state.surveys.map((s) => el("option", { value: s.id, selected: s.id === reply.survey }, `${s.title} (${s.id})`)));
      choose.addEventListener("change", () => update(() => { reply.survey = choose.value; }));
      body.append(choose, el("p", { class: "muted" }, t("Starts or continues the survey, as its keyword does.")));
    }
    box.replaceChildren(select, body);
  };
  render();
  return box;
}

function ruleItem(rule, index, rules) {
  const li = el("li", { class: "rule" + (rule.enabled === false ? " off" : ""), dataset: { index } });
  const match = el("select", { class: "rule-match", "aria-label": t("Match") },
    ...state.limits.match.map((m) => el("option", { value: m, selected: m === (rule.match || "exact") }, MATCH_LABELS[m]())));
  const word = el("input", { type: "text", class: "rule-keyword", value: rule.match === "regex" ? rule.pattern || "" : rule.keyword || "", "aria-label": t("Keyword") });
  const sync = () => {
    rule.match = match.value;
    delete rule.keyword; delete rule.pattern;
    rule[rule.match === "regex" ? "pattern" : "keyword"] = word.value;
  };
  match.addEventListener("change", sync);
  word.addEventListener("input", sync);
  const hours = el("input", { type: "text", class: "rule-hours", placeholder: "09:00-18:00", value: rule.hours || "", "aria-label": t("Hours (China time)") });
  hours.addEventListener("input", () => { if (hours.value.trim()) rule.hours = hours.value.trim(); else delete rule.hours; });
  const enabled = el("input", { type: "checkbox", class: "rule-enabled", checked: rule.enabled !== false });
  enabled.addEventListener("change", () => {
    if (enabled.checked) delete rule.enabled; else rule.enabled = false;
    li.classList.toggle("off", !enabled.checked);
  });
  const move = (to) => () => {
    if (to < 0 || to >= rules.length) return;
    [rules[index], rules[to]] = [rules[to], rules[index]];
    renderRules();
  };
  const tools = el("div", { class: "rule-tools" },
    el("label", {}, enabled, " ", t("On")),
    el("button", { type: "button", class: "link", "aria-label": t("Move up"), onclick: move(index - 1) }, "↑"),
    el("button", { type: "button", class: "link", "aria-label": t("Move down"), onclick: move(index + 1) }, "↓"),
    el("button", { type: "button", class: "link danger", onclick: () => { rules.splice(index, 1); renderRules(); } }, t("Delete")));
  li.append(
    el("div", { class: "rule-head" }, el("span", {}, t("When the message")), match, word,
      el("label", { class: "field inline" }, el("span", {}, t("Hours (China time)")), hours), tools),
    el("div", { class: "rule-reply" }, el("span", {}, t("reply with")),
      replyEditor(rule.reply, (r) => { rule.reply = r; }, ["text", "image", "voice", "video", "music", "news", "survey"])),
  );
  return li;
}

function renderRules() {
  const rules = state.data.rules;
  rulesList.replaceChildren(...rules.map((rule, i) => ruleItem(rule, i, rules)));
  if (!rules.length) rulesList.append(el("li", { class: "muted" }, t("No rules yet: every text gets the default reply.")));
}

function renderSpecials() {
  const d = state.data;
  const all = ["text", "image", "voice", "video", "music", "news"];
  const hint = el("input", { type: "checkbox", id: "welcome-hint", checked: d.welcome_hint !== false });
  hint.addEventListener("change", () => { d.welcome_hint = hint.checked; });
  specials.replaceChildren(
    el("h3", {}, t("Welcome (on subscribe)")),
    replyEditor(d.welcome, (r) => { d.welcome = r; }, all),
    el("label", {}, hint, " ", t("Add how to start the open surveys")),
    el("h3", {}, t("Default (text nothing else answers)")),
    replyEditor(d.default, (r) => { d.default = r; }, ["greeting", ...all, "survey"]),
    el("h3", {}, t("Unknown content (voice, location, …)")),
    replyEditor(d.unknown, (r) => { d.unknown = r; }, all),
    el("h3", {}, t("An image")),
    replyEditor(d.image, (r) => { d.image = r; }, ["configured", ...all]),
  );
}

function showIssues(issues) {
  issuesList.replaceChildren(...(issues || []).map((i) => el("li", {}, i.path ? `${i.path}: ${i.message}` : i.message)));
  // Mark the rules the mistakes are in (rules[3] is the 4th card).
  const wrong = new Set((issues || []).map((i) => /^rules\[(\d+)\]/.exec(i.path || "")?.[1]).filter(Boolean));
  for (const li of rulesList.querySelectorAll("li.rule")) li.classList.toggle("has-issue", wrong.has(li.dataset.index));
}

function show(data) {
  state = data;
  renderRules();
  renderSpecials();
  setStatus(state.version
    ? t("Version %(v)s, saved %(when)s by %(who)s", { v: state.version, when: fmt.dateTime(state.updated_at), who: state.updated_by })
    : t("The built-in replies (nothing saved yet)"));
}

/** POST JSON; the answer's status and body (a 422 carries every mistake). */
async function post(path, data) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-XSRFToken": xsrfToken() },
    body: JSON.stringify(data),
  });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

function saved({ status, body }) {
  if (status === 200) {
    showIssues([]);
    show(body);
    setStatus(t("Saved: version %(v)s is live in every process.", { v: body.version }));
  } else if (status === 422) {
    showIssues(body.issues);
    setStatus(t("Not saved: %(n)s mistake(s).", { n: body.issues.length }));
  } else if (status === 409) {
    setStatus(t("Someone saved in the meantime: reload the page."));
  } else {
    setStatus(t("Not saved: %(e)s", { e: body.error || status }));
  }
}

async function save() {
  setStatus(t("Saving…"));
  saved(await post("/api/replies", { data: state.data, version: state.version }));
}

async function importYaml(file) {
  saved(await post("/api/replies/import", { text: await file.text() }));
}

document.getElementById("add-rule").addEventListener("click", () => {
  state.data.rules.push({ match: "exact", keyword: "", reply: { text: "" } });
  renderRules();
  rulesList.querySelector("li.rule:last-child .rule-keyword")?.focus();
});
document.getElementById("save-replies").addEventListener("click", save);
document.getElementById("import-replies").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) importYaml(file);
});

show(await getJSON("/api/replies"));
loadMedia();
