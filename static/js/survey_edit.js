// The survey editor: CodeMirror 6 (vendored) on the YAML, validated on every save (debounced)
// by the server's full validation, every mistake marked at its line and listed beside the text.

import { el, fmt, getJSON, postJSON, t } from "./common.js";
import {
  EditorView,
  basicSetup,
  keymap,
  indentWithTab,
  yaml,
  lintGutter,
  setDiagnostics,
} from "../vendor/codemirror-6.0.2.min.js";

const app = document.getElementById("editor-app");
const surveyId = app.dataset.survey;
const base = `/api/survey-editor/${encodeURIComponent(surveyId)}`;
const statusLine = document.getElementById("editor-status");
const issuesList = document.getElementById("issues");
let info = null;
let saveTimer = null;
let saving = Promise.resolve();

function setStatus(text) {
  statusLine.textContent = text;
}

const view = new EditorView({
  parent: document.getElementById("editor"),
  extensions: [
    EditorView.cspNonce.of(document.querySelector('meta[name="csp-nonce"]').content),
    basicSetup,
    keymap.of([indentWithTab]),
    yaml(),
    lintGutter(),
    EditorView.lineWrapping,
    EditorView.updateListener.of((update) => {
      if (update.docChanged) scheduleSave();
    }),
  ],
});

function text() {
  return view.state.doc.toString();
}

function setText(value) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: value } });
}

function position(issue) {
  const doc = view.state.doc;
  const line = doc.line(Math.min(Math.max(issue.line || 1, 1), doc.lines));
  const from = Math.min(line.from + Math.max((issue.column || 1) - 1, 0), line.to);
  return { from, to: Math.max(from, line.to) };
}

function showIssues(issues) {
  view.dispatch(
    setDiagnostics(
      view.state,
      issues.map((issue) => ({ ...position(issue), severity: "error", message: issue.message })),
    ),
  );
  issuesList.replaceChildren(
    ...issues.map((issue) => {
      const where = issue.line ? t("Line %(line)s, column %(column)s", issue) : "";
      const item = el(
        "li",
        { class: "issue", "data-line": issue.line, tabindex: 0 },
        el("strong", {}, where),
        " ",
        issue.path ? el("code", {}, issue.path) : "",
        " ",
        issue.message,
      );
      item.addEventListener("click", () => {
        if (!issue.line) return;
        view.dispatch({ selection: { anchor: position(issue).from }, scrollIntoView: true });
        view.focus();
      });
      return item;
    }),
  );
  if (!issues.length) issuesList.append(el("li", { class: "ok" }, t("No mistakes.")));
}

function scheduleSave() {
  clearTimeout(saveTimer);
  setStatus(t("Editing…"));
  saveTimer = setTimeout(() => save().catch(showError), 800);
}

async function save() {
  clearTimeout(saveTimer);
  saving = saving.then(async () => {
    const result = await postJSON(`${base}/draft`, { text: text() });
    showIssues(result.issues);
    setStatus(result.ok ? t("Draft saved; no mistakes.") : t("Draft saved with %(n)s mistake(s).", { n: result.issues.length }));
    return result;
  });
  return saving;
}

function showError(error) {
  const issues = error.data && error.data.issues;
  if (issues) showIssues(issues);
  setStatus(error.message || String(error));
}

async function post(path, data) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-XSRFToken": document.querySelector('meta[name="xsrf-token"]').content },
    body: JSON.stringify(data),
  });
  const body = await response.json().catch(() => ({}));
  return { status: response.status, body };
}

function stateText(survey) {
  if (!survey) return t("Not published yet.");
  const names = {
    open: t("Open"),
    closed: t("Closed"),
    not_yet: t("Not open yet"),
    ended: t("Ended"),
    archived: t("Archived"),
  };
  return t("Version %(v)s is live: %(state)s.", { v: survey.version, state: names[survey.availability] || survey.availability });
}

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function render() {
  document.getElementById("state-line").textContent = stateText(info.survey);
  const isOpen = info.survey && info.survey.open;
  document.getElementById("toggle-open").textContent = isOpen ? t("Close") : t("Reopen");
  document.getElementById("toggle-archive").textContent = info.archived ? t("Unarchive") : t("Archive");
  for (const id of ["toggle-open", "toggle-archive", "save-schedule"]) {
    document.getElementById(id).disabled = !info.survey;
  }
  document.getElementById("export-yaml").hidden = !info.versions.length;
  document.getElementById("opens-at").value = localInput(info.opens_at);
  document.getElementById("closes-at").value = localInput(info.closes_at);
  const rows = info.versions
    .slice()
    .reverse()
    .map((v) =>
      el(
        "tr",
        {},
        el("td", {}, `v${v.version}`),
        el("td", {}, fmt.dateTime(v.published_at)),
        el("td", { "data-content": true }, v.published_by || ""),
        el("td", { class: "num" }, info.in_progress[String(v.version)] || 0),
        el("td", {}, el("a", { href: `/dashboard/survey-editor/${encodeURIComponent(surveyId)}/export.yaml?version=${v.version}` }, t("Export YAML"))),
      ),
    );
  document.getElementById("versions").replaceChildren(...rows);
  const options = [...info.versions.map((v) => [String(v.version), `v${v.version}`]), ["draft", t("Draft")]];
  for (const [id, pick] of [["diff-a", options.length > 2 ? options.length - 3 : 0], ["diff-b", options.length - 1]]) {
    const select = document.getElementById(id);
    select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
    select.selectedIndex = Math.max(pick, 0);
  }
}

async function reload() {
  info = await getJSON(base);
  render();
}

async function publish() {
  await save();
  const n = info.in_progress_on_latest || 0;
  const question = info.versions.length
    ? t("Publish as version %(v)s? %(n)s user(s) in progress on version %(cur)s finish on it.", {
        v: info.versions.length + 1,
        n,
        cur: info.versions.length,
      })
    : t("Publish this survey as version 1?");
  if (!window.confirm(question)) return;
  const { status, body } = await post(`${base}/publish`, { text: text() });
  if (status === 422) {
    showIssues(body.issues);
    setStatus(t("Not published: %(n)s mistake(s).", { n: body.issues.length }));
    return;
  }
  if (status !== 200) throw new Error(body.error || String(status));
  setStatus(body.created ? t("Published version %(v)s.", { v: body.version }) : t("Unchanged: version %(v)s is the same.", { v: body.version }));
  await reload();
}

async function tryDraft() {
  await save();
  const { status, body } = await post(`${base}/try`, { text: text() });
  if (status === 422) {
    showIssues(body.issues);
    setStatus(t("Fix the mistakes before trying it."));
    return;
  }
  if (status !== 200) throw new Error(body.error || String(status));
  location.href = `/dashboard/simulator?say=${encodeURIComponent(body.keyword)}`;
}

async function setState(data) {
  const { status, body } = await post(`${base}/state`, data);
  if (status === 409) showIssues(body.issues);
  else if (status !== 200) throw new Error(body.error || String(status));
  await reload();
}

function toISO(value) {
  return value ? new Date(value).toISOString() : null;
}

document.getElementById("save-draft").addEventListener("click", () => save().catch(showError));
document.getElementById("publish").addEventListener("click", () => publish().catch(showError));
document.getElementById("try-draft").addEventListener("click", () => tryDraft().catch(showError));
document.getElementById("toggle-open").addEventListener("click", () =>
  setState({ action: info.survey && info.survey.open ? "close" : "reopen" }).catch(showError),
);
document.getElementById("toggle-archive").addEventListener("click", () =>
  setState({ action: info.archived ? "unarchive" : "archive" }).catch(showError),
);
document.getElementById("save-schedule").addEventListener("click", () =>
  setState({
    action: "schedule",
    opens_at: toISO(document.getElementById("opens-at").value),
    closes_at: toISO(document.getElementById("closes-at").value),
  }).catch(showError),
);
document.getElementById("import-yaml").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) setText(await file.text());
});
document.getElementById("show-diff").addEventListener("click", async () => {
  const a = document.getElementById("diff-a").value;
  const b = document.getElementById("diff-b").value;
  await save();
  const result = await getJSON(`${base}/diff`, { a, b }).catch((e) => ({ diff: e.message }));
  document.getElementById("diff").textContent = result.diff || t("No differences.");
});

async function start() {
  await reload();
  setText(info.text);
  clearTimeout(saveTimer); // loading the text is not an edit
  const result = await postJSON(`${base}/check`, { text: text() });
  showIssues(result.issues);
  setStatus(info.draft_saved_at ? t("Draft loaded.") : "");
}

start().catch(showError);
