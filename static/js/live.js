// Live traffic: every message and our reply as it happens; pause, filter by type and user.

import { getJSON, messageRow, t } from "./common.js";
import { LiveFeed } from "./feed.js";

const MAX_ROWS = 500;
// The page opens with the last messages (the same rows as the log), then streams.
const HISTORY = 50;
const tbody = document.getElementById("feed");
const empty = document.getElementById("feed-empty");
const pauseButton = document.getElementById("pause");
const typeFilter = document.getElementById("filter-type");
const userFilter = document.getElementById("filter-user");
const includeTest = document.getElementById("include-test");
const pausedCount = document.getElementById("paused-count");

let paused = false;
let held = [];

function visible(m) {
  if (!includeTest.checked && m.test_user) return false;
  if (typeFilter.value && m.type !== typeFilter.value) return false;
  const user = userFilter.value.trim();
  return !user || m.openid.includes(user);
}

function applyFilters() {
  for (const row of tbody.rows) {
    row.hidden = !visible(row.message);
  }
  updateEmpty();
}

function show(m, { fresh = true } = {}) {
  const row = messageRow(m);
  row.message = m;
  if (fresh) row.classList.add("fresh");
  row.hidden = !visible(m);
  tbody.prepend(row);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
  updateEmpty();
}

function updateEmpty() {
  empty.hidden = [...tbody.rows].some((row) => !row.hidden);
}

function updatePaused() {
  pauseButton.textContent = paused ? t("Resume") : t("Pause");
  pausedCount.textContent = paused && held.length ? t("%(n)s new while paused", { n: held.length }) : "";
}

pauseButton.addEventListener("click", () => {
  paused = !paused;
  if (!paused) {
    for (const m of held) show(m);
    held = [];
  }
  updatePaused();
});
document.getElementById("clear").addEventListener("click", () => {
  tbody.replaceChildren();
  held = [];
  updatePaused();
  updateEmpty();
});
for (const control of [typeFilter, includeTest]) control.addEventListener("change", applyFilters);
userFilter.addEventListener("input", applyFilters);

const feed = new LiveFeed();
try {
  const history = await getJSON("/api/messages", { per_page: HISTORY, test: "1" });
  const oldestFirst = [...history.items].reverse();
  for (const m of oldestFirst) show(m, { fresh: false });
  feed.prime(oldestFirst);
} catch (error) {
  console.error(error);
}
document.querySelector("main").dataset.history = "1";
feed
  .onMessage((m) => {
    if (paused) {
      held.push(m);
      updatePaused();
    } else {
      show(m);
    }
  })
  .start();
