// The list of surveys with their starts and completions.

import { el, fmt, getJSON, t } from "./common.js";

const tbody = document.getElementById("rows");
const includeTest = document.getElementById("include-test");

const AVAILABILITY = {
  open: () => t("Open"),
  closed: () => t("Closed"),
  not_yet: () => t("Not open yet"),
  ended: () => t("Ended"),
  archived: () => t("Archived"),
  draft: () => t("Draft only"),
};

async function load() {
  const data = await getJSON("/api/surveys", { test: includeTest.checked ? "1" : "0" });
  tbody.replaceChildren(
    ...data.items.map((s) =>
      el(
        "tr",
        {},
        el("td", { "data-content": true }, el("a", { href: `/dashboard/surveys/${encodeURIComponent(s.id)}` }, s.title)),
        el("td", { "data-content": true }, s.keywords.join("、")),
        el("td", { class: "num" }, s.questions),
        el("td", {}, (AVAILABILITY[s.availability] || (() => s.availability))()),
        el("td", { class: "num" }, fmt.number(s.started)),
        el("td", { class: "num" }, `${fmt.number(s.finished)} (${fmt.percent(s.completion_rate)})`),
      ),
    ),
  );
  if (!data.items.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, t("No surveys are loaded."))));
}

const SLUG = /^[a-z0-9][a-z0-9_-]{0,63}$/;

async function loadEditor() {
  const data = await getJSON("/api/survey-editor");
  const editUrl = (id) => `/dashboard/survey-editor/${encodeURIComponent(id)}`;
  document.getElementById("editor-rows").replaceChildren(
    ...data.items.map((s) =>
      el(
        "tr",
        {},
        el("td", { "data-content": true }, s.title ? `${s.title} (${s.id})` : s.id),
        el("td", { class: "num" }, s.version ? `v${s.version}` : "–"),
        el("td", {}, (AVAILABILITY[s.availability] || (() => s.availability))()),
        el("td", { class: "num" }, fmt.number(s.in_progress)),
        el("td", {}, s.draft_saved_at ? fmt.dateTime(s.draft_saved_at) : "–"),
        el("td", {}, el("a", { href: editUrl(s.id), class: "edit" }, t("Edit"))),
      ),
    ),
  );
}

document.getElementById("new-survey").addEventListener("click", () => {
  const id = (window.prompt(t("An id for the new survey (lowercase letters, digits, - or _):")) || "").trim();
  if (!id) return;
  if (!SLUG.test(id)) {
    window.alert(t("The id may only hold lowercase letters, digits, - or _."));
    return;
  }
  location.href = `/dashboard/survey-editor/${encodeURIComponent(id)}`;
});

loadEditor().catch(console.error);

includeTest.addEventListener("change", () => {
  load().catch(console.error);
});
load().catch(console.error);
