// Overview: counters and a messages-per-minute chart of the last hour that moves with the feed.

import { baseOption, chart } from "./charts.js";
import { fmt, getJSON, t } from "./common.js";
import { LiveFeed } from "./feed.js";
import { checklist } from "./setup.js";

const includeTest = document.getElementById("include-test");
const loadSetup = checklist(document.getElementById("setup"));
const trafficChart = chart(document.getElementById("traffic-chart"));
const trendChart = chart(document.getElementById("trend-chart"));
let trendDays = 7;
let buckets = [];

function params() {
  return { test: includeTest.checked ? "1" : "0" };
}

async function loadCounts() {
  const data = await getJSON("/api/overview", params());
  for (const node of document.querySelectorAll("[data-stat]")) {
    const key = node.dataset.stat;
    if (key === "survey_starts") node.textContent = fmt.number(data.surveys?.started);
    else if (key === "survey_completions") node.textContent = fmt.number(data.surveys?.finished);
    else node.textContent = fmt.number(data[key]);
  }
}

function draw() {
  trafficChart.setOption(
    baseOption({
      xAxis: { type: "category", data: buckets.map((b) => fmt.minute(b.t)), boundaryGap: true },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ name: t("Messages"), type: "bar", data: buckets.map((b) => b.count), barMaxWidth: 14 }],
    }),
  );
}

async function loadTrends() {
  const data = await getJSON("/api/trends", { days: trendDays, ...params() });
  const items = data.items;
  trendChart.setOption(
    baseOption({
      grid: { left: 8, right: 8, top: 24, bottom: 48, containLabel: true },
      legend: { bottom: 0, type: "scroll" },
      xAxis: { type: "category", data: items.map((d) => d.date.slice(5)) },
      yAxis: { type: "value", minInterval: 1 },
      series: [
        { name: t("Messages"), type: "bar", data: items.map((d) => d.messages), barMaxWidth: 18 },
        { name: t("New followers"), type: "line", data: items.map((d) => d.follows) },
        { name: t("Survey completions"), type: "line", data: items.map((d) => d.completions) },
      ],
    }),
    true,
  );
  document.getElementById("trend-chart").dataset.days = String(data.days);
}

for (const button of document.querySelectorAll("[data-days]")) {
  button.addEventListener("click", () => {
    trendDays = Number(button.dataset.days);
    for (const other of document.querySelectorAll("[data-days]")) {
      other.classList.toggle("active", other === button);
      other.setAttribute("aria-pressed", String(other === button));
    }
    loadTrends().catch(console.error);
  });
}

async function loadTraffic() {
  const data = await getJSON("/api/traffic", { minutes: 60, ...params() });
  buckets = data.buckets;
  draw();
}

/** Move the window forward to the current minute (empty buckets for minutes without messages). */
function advance() {
  if (!buckets.length) return;
  const current = new Date();
  current.setSeconds(0, 0);
  let last = new Date(buckets[buckets.length - 1].t);
  let moved = false;
  while (last < current) {
    last = new Date(last.getTime() + 60000);
    buckets.push({ t: last.toISOString(), count: 0 });
    buckets.shift();
    moved = true;
  }
  if (moved) draw();
}

const feed = new LiveFeed();
feed.onMessage((m) => {
  if (m.test_user && !includeTest.checked) return;
  advance();
  const minute = new Date(m.received_at);
  minute.setSeconds(0, 0);
  const bucket = buckets.find((b) => new Date(b.t).getTime() === minute.getTime());
  if (bucket) {
    bucket.count += 1;
    draw();
  }
  scheduleCounts();
});

let countsTimer = null;
function scheduleCounts() {
  if (countsTimer) return;
  countsTimer = setTimeout(() => {
    countsTimer = null;
    loadCounts().catch(console.error);
    if (!document.getElementById("setup").hidden) loadSetup().catch(console.error);
  }, 2000);
}

includeTest.addEventListener("change", () => {
  loadCounts().catch(console.error);
  loadTraffic().catch(console.error);
  loadTrends().catch(console.error);
});

await Promise.all([loadSetup(), loadCounts(), loadTraffic(), loadTrends()]);
feed.start();
setInterval(advance, 5000);
// Re-read the truth from the server now and then (other time zones' "today", missed events).
setInterval(() => {
  loadCounts().catch(console.error);
  loadTraffic().catch(console.error);
  loadTrends().catch(console.error);
}, 60000);
