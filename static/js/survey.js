// One survey's charts, drawn from the survey aggregates; they refresh when new answers arrive.

import { baseOption, chart, emptyNote } from "./charts.js";
import { debounce, el, fmt, getJSON, t } from "./common.js";
import { LiveFeed } from "./feed.js";

const surveyId = document.querySelector("main").dataset.survey;
const includeTest = document.getElementById("include-test");
const exportLink = document.getElementById("export");
const questionsBox = document.getElementById("questions");

const funnelChart = chart(document.getElementById("chart-funnel"));
const timeChart = chart(document.getElementById("chart-time"));
const scoresChart = chart(document.getElementById("chart-scores"));
const bandsChart = chart(document.getElementById("chart-bands"));
const questionCharts = new Map();

function short(text, n = 14) {
  return text.length > n ? text.slice(0, n) + "…" : text;
}

function drawFunnel(funnel) {
  const steps = [
    { name: t("Started"), value: funnel.started },
    ...funnel.questions.map((q) => ({ name: `Q${q.position} ${short(q.title)}`, value: q.answered })),
    { name: t("Finished"), value: funnel.finished },
  ];
  funnelChart.setOption(
    baseOption({
      grid: { left: 8, right: 40, top: 8, bottom: 8, containLabel: true },
      tooltip: { trigger: "axis", renderMode: "richText" },
      xAxis: { type: "value", minInterval: 1 },
      yAxis: { type: "category", inverse: true, data: steps.map((s) => s.name) },
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
        type: "pie", radius: ["35%", "65%"], center: ["50%", "45%"], stillShowZeroSum: false,
        label: { formatter: "{b}\n{c} ({d}%)" },
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
    const card = el("div", { class: "card" }, el("h2", {}, `Q${q.position}. ${q.title}`), el("p", { class: "muted small" }), box);
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
  entry.chart.setOption(
    baseOption({
      grid: { left: 8, right: 60, top: 8, bottom: 8, containLabel: true },
      xAxis: { type: "value", minInterval: 1 },
      yAxis: { type: "category", inverse: true, data: q.options.map((o) => `${o.value}. ${short(o.label, 16)}`) },
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

function params() {
  return { test: includeTest.checked ? "1" : "0" };
}

async function load() {
  const data = await getJSON(`/api/surveys/${encodeURIComponent(surveyId)}`, params());
  const f = data.funnel;
  const stat = (key, value) => {
    document.querySelector(`[data-stat="${key}"]`).textContent = value;
  };
  stat("started", fmt.number(f.started));
  stat("finished", fmt.number(f.finished));
  stat("ended", `${fmt.number(f.screened_out)} / ${fmt.number(f.quota_full)}`);
  stat("rate", fmt.percent(f.completion_rate));
  stat("average", data.average_score === null ? "–" : data.average_score);
  drawFunnel(f);
  drawTime(data.completions);
  drawScores(data.scores, data.score_range);
  drawBands(data.bands);
  for (const q of data.questions) drawQuestion(q);
  exportLink.href = `/dashboard/surveys/${encodeURIComponent(surveyId)}/export.csv?test=${params().test}`;
  document.querySelector("main").dataset.loaded = "1";
}

const reload = debounce(() => load().catch(console.error), 1500);
includeTest.checked = localStorage.getItem("include-test-stats") === "1";
includeTest.addEventListener("change", () => {
  localStorage.setItem("include-test-stats", includeTest.checked ? "1" : "0");
  load().catch(console.error);
});

await load();
// Answers arrive as messages: refresh the charts shortly after any text from a user.
new LiveFeed()
  .onMessage((m) => {
    if (m.type === "text" && (includeTest.checked || !m.test_user)) reload();
  })
  .start();
