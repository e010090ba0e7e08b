// The list of surveys with their starts and completions.

import { el, fmt, getJSON, t } from "./common.js";

const tbody = document.getElementById("rows");
const includeTest = document.getElementById("include-test");

const AVAILABILITY = {
  open: () => t("Open"),
  closed: () => t("Closed"),
  not_yet: () => t("Not open yet"),
  ended: () => t("Ended"),
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

includeTest.addEventListener("change", () => {
  load().catch(console.error);
});
load().catch(console.error);
