// One survey's charts, drawn from the survey aggregates; they refresh when new answers arrive.

import { baseOption, chart, emptyNote, fitRows, narrow, wrappedLabels } from "./charts.js";
import { debounce, el, fmt, formValues, getJSON, postJSON, renderPager, syncFormWithURL, t, writeURL } from "./common.js";
import { LiveFeed } from "./feed.js";

const surveyId = document.querySelector("main").dataset.survey;
const includeTest = document.getElementById("include-test");
const exportLink = document.getElementById("export");
const questionsBox = document.getElementById("questions");

const funnelChart = chart(document.getElementById("chart-funnel"));
const timeChart = chart(document.getElementById("chart-time"));
const scoresChart = chart(document.getElementById("chart-scores"));
const bandsChart = chart(document.getElementById("chart-bands"));
const crosstabChart = chart(document.getElementById("chart-crosstab"));
const questionCharts = new Map();
const filtersForm = document.getElementById("filters");
const crosstabForm = document.getElementById("crosstab-form");
const textsForm = document.getElementById("texts-form");
const filterError = document.getElementById("filter-error");
const api = `/api/surveys/${encodeURIComponent(surveyId)}`;

function short(text, n = 14) {
  return text.length > n ? text.slice(0, n) + "…" : text;
}

function drawFunnel(funnel) {
  const steps = [
    { name: t("Started"), value: funnel.started },
    ...funnel.questions.map((q) => ({ name: `Q${q.position} ${short(q.title)}`, value: q.answered })),
    { name: t("Finished"), value: funnel.finished },
  ];
  fitRows(funnelChart, steps.length);
  funnelChart.setOption(
    baseOption({
      grid: { left: 8, right: 40, top: 8, bottom: 8, containLabel: true },
      tooltip: { trigger: "axis", renderMode: "richText" },
      xAxis: { type: "value", minInterval: 1 },
      yAxis: { type: "category", inverse: true, data: steps.map((s) => s.name), axisLabel: wrappedLabels() },
      series: [{
        type: "bar", data: steps.map((s) => s.value), barMaxWidth: 18,
        label: { show: true, position: "right" },
      }],
    }),
    true,
  );
}

function drawTime(completions) {
  timeChart.setOption(
    baseOption({
      title: emptyNote(completions.length > 0),
      xAxis: { type: "category", data: completions.map((c) => c.date.slice(5)) },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ name: t("Completions"), type: "line", smooth: true, areaStyle: { opacity: 0.15 }, data: completions.map((c) => c.count) }],
    }),
    true,
  );
}

function drawScores(scores, [low, high]) {
  const counts = new Map(scores.map((s) => [s.score, s.count]));
  const axis = [];
  if (high > low && high - low <= 200) for (let s = low; s <= high; s++) axis.push(s);
  else axis.push(...scores.map((s) => s.score));
  scoresChart.setOption(
    baseOption({
      title: emptyNote(scores.length > 0),
      xAxis: { type: "category", name: t("Score"), data: axis.map(String) },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ name: t("Users"), type: "bar", data: axis.map((s) => counts.get(s) || 0), barMaxWidth: 24 }],
    }),
    true,
  );
}

function drawBands(bands) {
  bandsChart.setOption(
    baseOption({
      title: emptyNote(bands.some((b) => b.count > 0)),
      tooltip: { trigger: "item", renderMode: "richText" },
      legend: { bottom: 0, type: "scroll", data: bands.map((b) => b.title) },
      series: [{
        type: "pie", radius: narrow() ? ["30%", "62%"] : ["35%", "65%"], center: ["50%", "45%"], stillShowZeroSum: false,
        // On a phone the names are in the legend below; the ring shows the shares only.
        label: narrow() ? { position: "inside", formatter: "{d}%", color: "#fff" } : { formatter: "{b}\n{c} ({d}%)" },
        data: bands.filter((b) => b.count > 0).map((b) => ({ name: b.title, value: b.count })),
      }],
    }),
    true,
  );
}

function drawQuestion(q) {
  let entry = questionCharts.get(q.id);
  if (!entry) {
    const box = el("div", { class: "chart small" });
    const card = el("div", { class: "card" }, el("h2", { "data-content": true }, `Q${q.position}. ${q.title}`), el("p", { class: "muted small" }), box);
    questionsBox.append(card);
    entry = { card, chart: chart(box) };
    questionCharts.set(q.id, entry);
  }
  entry.card.querySelector("p").textContent = t("Answers: %(n)s", { n: q.answered });
  if (!q.options.length) {
    const stats = q.stats ? t("Average %(avg)s, min %(min)s, max %(max)s", { avg: q.stats.avg ?? "–", min: q.stats.min ?? "–", max: q.stats.max ?? "–" }) : "";
    entry.card.querySelector("p").textContent += stats ? ` · ${stats}` : "";
    entry.chart.getDom().hidden = true;
    return;
  }
  const total = q.answered || 0;
  fitRows(entry.chart, q.options.length);
  entry.chart.setOption(
    baseOption({
      grid: { left: 8, right: 60, top: 8, bottom: 8, containLabel: true },
      xAxis: { type: "value", minInterval: 1 },
      yAxis: {
        type: "category", inverse: true, axisLabel: wrappedLabels(),
        data: q.options.map((o) => `${o.value}. ${short(o.label, 16)}`),
      },
      series: [{
        type: "bar", barMaxWidth: 18,
        data: q.options.map((o) => o.count),
        label: {
          show: true, position: "right",
          formatter: (p) => `${p.value} (${total ? Math.round((p.value / total) * 100) : 0}%)`,
        },
      }],
    }),
    true,
  );
}

/** The page's filters (and the test-user switch): every request of this page sends them. */
const initial = new URLSearchParams(location.search);
function params() {
  const values = formValues(filtersForm);
  // Before the first answer fills the selects, a shared link's filters come from the URL.
  if (!choicesFilled) for (const s of filtersForm.querySelectorAll("select[data-fill]")) values[s.name] ||= initial.get(s.name) || "";
  return { ...values, test: includeTest.checked ? "1" : "0" };
}

function query(extra = {}) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...params(), ...extra })) if (v !== "" && v !== undefined) out.set(k, v);
  return out.toString();
}

/** Fill a select (keeping its first "all" option and its current value) with [value, label]. */
function fill(name, items, { keepFirst = true } = {}) {
  for (const select of document.querySelectorAll(`select[data-fill="${name}"]`)) {
    const current = select.value || new URLSearchParams(location.search).get(select.name) || "";
    const first = keepFirst ? select.options[0] : null;
    select.replaceChildren(...(first ? [first] : []), ...items.map(([value, label]) => el("option", { value }, label)));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }
}

let choicesFilled = false;
function fillChoices(data) {
  fill("versions", data.versions.map((v) => [String(v.version), t("Version %(v)s", { v: v.version })]));
  fill("channels", data.channels.filter((c) => c.channel).map((c) => [c.channel, c.channel]));
  if (choicesFilled) return;
  choicesFilled = true;
  fill("bands", data.bands.filter((b) => b.band).map((b) => [b.band, b.title]));
  const answers = [];
  for (const q of data.questions) {
    if (q.kind === "number" || q.kind === "text") continue;
    for (const o of q.options) answers.push([`${q.id}:${o.value}`, `Q${q.position} ${short(q.title, 10)} = ${o.value}. ${short(o.label, 10)}`]);
  }
  fill("answers", answers);
  const crossable = data.questions.filter((q) => q.kind !== "text").map((q) => [q.id, `Q${q.position} ${short(q.title, 18)}`]);
  fill("crossable", crossable, { keepFirst: false });
  const columns = crosstabForm.elements.columns;
  if (columns.options.length > 1 && columns.value === crosstabForm.elements.rows.value) columns.selectedIndex = 1;
  const texts = data.questions.filter((q) => q.kind === "text").map((q) => [q.id, `Q${q.position} ${short(q.title, 18)}`]);
  fill("texts", texts, { keepFirst: false });
  document.getElementById("texts-card").hidden = texts.length === 0;
}

function drawChannels(channels) {
  const rows = channels.map((c) =>
    el(
      "tr",
      {},
      el("td", {}, c.channel ?? t("(no channel)")),
      el("td", { class: "num" }, fmt.number(c.started)),
      el("td", { class: "num" }, fmt.number(c.finished)),
      el("td", { class: "num" }, fmt.percent(c.completion_rate)),
    ),
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "empty" }, t("No data yet"))));
  document.getElementById("channel-rows").replaceChildren(...rows);
}

async function loadQr() {
  const data = await getJSON(`${api}/qr`);
  const rows = data.items.map((q) =>
    el("tr", {}, el("td", {}, q.channel), el("td", { class: "num" }, fmt.number(q.scans)),
      el("td", { class: "time" }, q.expires_at ? fmt.dateTime(q.expires_at) : t("Permanent")),
      el("td", {}, el("a", { href: q.image }, t("Download PNG")))),
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "empty" }, t("No data yet"))));
  document.getElementById("qr-rows").replaceChildren(...rows);
}

document.getElementById("qr-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("qr-error");
  error.textContent = "";
  try {
    await postJSON(`${api}/qr`, formValues(event.target));
    event.target.reset();
    await loadQr();
  } catch (e) {
    error.textContent = e.message;
  }
});

async function loadCrosstab() {
  const { rows, columns, show } = formValues(crosstabForm);
  const table = document.getElementById("crosstab-table");
  if (!rows || !columns) return;
  document.getElementById("crosstab-export").href =
    `/dashboard/surveys/${encodeURIComponent(surveyId)}/crosstab.csv?${query({ rows, columns })}`;
  const data = await getJSON(`${api}/crosstab`, { ...params(), rows, columns });
  const cols = data.columns.categories;
  const cell = (i, j) => (show === "counts" ? fmt.number(data.counts[i][j]) : `${data[show][i][j].toFixed(1)}%`);
  table.replaceChildren(
    el("thead", {}, el("tr", {}, el("th", { "data-content": true }, `${short(data.rows.title, 12)} \\ ${short(data.columns.title, 12)}`),
      ...cols.map((c) => el("th", { class: "num", "data-content": true }, c.label)), el("th", { class: "num" }, t("Total")))),
    el("tbody", {},
      ...data.rows.categories.map((r, i) =>
        el("tr", {}, el("th", { "data-content": true }, r.label), ...cols.map((_, j) => el("td", { class: "num" }, cell(i, j))),
          el("td", { class: "num" }, fmt.number(data.row_totals[i])))),
      el("tr", {}, el("th", {}, t("Total")), ...data.column_totals.map((n) => el("td", { class: "num" }, fmt.number(n))),
        el("td", { class: "num" }, fmt.number(data.total)))),
  );
  crosstabChart.setOption(
    baseOption({
      title: emptyNote(data.total > 0),
      legend: { bottom: 0, type: "scroll" },
      xAxis: { type: "category", data: data.rows.categories.map((r) => short(r.label, 8)) },
      yAxis: { type: "value", minInterval: 1 },
      series: cols.map((c, j) => ({
        name: c.label, type: "bar", stack: "all", barMaxWidth: 32,
        data: data.rows.categories.map((_, i) => (show === "row_percent" ? data.row_percent[i][j] : data.counts[i][j])),
      })),
    }),
    true,
  );
}

async function loadTexts(page = 1) {
  const { question, q } = formValues(textsForm);
  if (!question) return;
  const data = await getJSON(`${api}/text/${encodeURIComponent(question)}`, { ...params(), q, page });
  const rows = data.items.map((item) =>
    el("tr", {}, el("td", { class: "time" }, fmt.dateTime(item.at)),
      el("td", {}, el("a", { href: `/dashboard/users/${encodeURIComponent(item.openid)}` }, item.openid)),
      el("td", { class: "text" }, item.text)),
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "empty" }, t("No data yet"))));
  document.getElementById("text-rows").replaceChildren(...rows);
  document.getElementById("texts-total").textContent = t("Answers: %(n)s", { n: data.total });
  renderPager(document.getElementById("texts-pager"), data, (p) => loadTexts(p).catch(console.error));
}

async function load() {
  let data;
  try {
    data = await getJSON(api, params());
    filterError.textContent = "";
  } catch (error) {
    if (error.status !== 400) throw error;
    filterError.textContent = error.message;
    return;
  }
  const f = data.funnel;
  const stat = (key, value) => {
    document.querySelector(`[data-stat="${key}"]`).textContent = value;
  };
  stat("started", fmt.number(f.started));
  stat("finished", fmt.number(f.finished));
  stat("ended", `${fmt.number(f.screened_out)} / ${fmt.number(f.quota_full)}`);
  stat("expired", fmt.number(f.expired));
  stat("reminded", fmt.number(f.reminders.reminded));
  stat("reminded-finished", fmt.number(f.reminders.finished_after));
  stat("rate", fmt.percent(f.completion_rate));
  stat("average", data.average_score === null ? "–" : data.average_score);
  drawFunnel(f);
  drawTime(data.completions);
  drawScores(data.scores, data.score_range);
  drawBands(data.bands);
  for (const q of data.questions) drawQuestion(q);
  fillChoices(data);
  drawChannels(data.channels);
  exportLink.href = `/dashboard/surveys/${encodeURIComponent(surveyId)}/export.csv?${query()}`;
  document.getElementById("export-xlsx").href = `/dashboard/surveys/${encodeURIComponent(surveyId)}/export.xlsx?${query()}`;
  await Promise.all([loadCrosstab(), loadTexts(), loadQr()]);
  document.querySelector("main").dataset.loaded = "1";
}

const reload = debounce(() => load().catch(console.error), 1500);
includeTest.addEventListener("change", () => {
  load().catch(console.error);
});

syncFormWithURL(filtersForm);
filtersForm.addEventListener("submit", (event) => {
  event.preventDefault();
  writeURL(formValues(filtersForm));
  load().catch(console.error);
});
document.getElementById("clear-filters").addEventListener("click", () => {
  filtersForm.reset();
  writeURL({});
  load().catch(console.error);
});
crosstabForm.addEventListener("change", () => loadCrosstab().catch(console.error));
textsForm.addEventListener("submit", (event) => {
  event.preventDefault();
  loadTexts(1).catch(console.error);
});
textsForm.elements.question.addEventListener("change", () => loadTexts(1).catch(console.error));

await load();
// Answers arrive as messages: refresh the charts shortly after any text from a user.
new LiveFeed()
  .onMessage((m) => {
    if (m.type === "text" && (includeTest.checked || !m.test_user)) reload();
  })
  .start();
