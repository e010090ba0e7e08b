// One user: profile, progress in every survey, and the whole conversation (paged backwards).

import { el, fmt, getJSON, messageText, postJSON, progressBadge, t } from "./common.js";
import { LiveFeed } from "./feed.js";

const openid = document.querySelector("main").dataset.openid;
const chat = document.getElementById("conversation");
const olderButton = document.getElementById("older");
let oldest = null;

for (const node of document.querySelectorAll("[data-time]")) node.textContent = fmt.dateTime(node.dataset.time);

export function bubbles(m) {
  const out = [el("div", { class: "bubble in", dataset: { id: m.id } }, messageText(m), el("span", { class: "meta" }, fmt.dateTime(m.received_at)))];
  if (m.reply_kind && m.reply_kind !== "success") {
    out.push(el("div", { class: "bubble out" }, m.reply, el("span", { class: "meta" }, fmt.ms(m.latency_ms))));
  }
  return out;
}

/** One survey for this user: where they are, their score and result, and every answer. */
function surveyEntry(p) {
  const summary = [];
  if (p.score !== null && p.score !== undefined) summary.push(`${t("Score")}: ${p.score}`);
  const answers = (p.answers || []).map((a) =>
    el(
      "li",
      { class: "answer", dataset: { question: a.question_id } },
      el("span", { class: "answer-q", "data-content": true }, a.position ? `Q${a.position}. ${a.question}` : a.question_id),
      el("span", { class: "answer-a" }, el("span", { "data-content": true }, a.answer), a.score !== null && a.score !== undefined ? el("span", { class: "muted small" }, ` (${t("Score")}: ${a.score})`) : null),
    ),
  );
  return el(
    "li",
    { dataset: { survey: p.survey_id } },
    el("div", {}, el("a", { href: `/dashboard/surveys/${encodeURIComponent(p.survey_id)}`, "data-content": true }, p.title), " ", progressBadge(p)),
    summary.length ? el("div", { class: "muted small" }, summary.join(" · ")) : null,
    answers.length ? el("ol", { class: "answers" }, answers) : null,
  );
}

async function loadProgress() {
  const user = await getJSON(`/api/users/${encodeURIComponent(openid)}`);
  const list = document.getElementById("progress");
  list.replaceChildren(...user.surveys.map(surveyEntry));
  if (!user.surveys.length) list.append(el("li", { class: "muted" }, t("No surveys.")));
}

async function loadOlder() {
  const data = await getJSON(`/api/users/${encodeURIComponent(openid)}/messages`, { before: oldest || "" });
  const nodes = data.items.flatMap(bubbles);
  const atTop = chat.scrollTop;
  chat.prepend(...nodes);
  if (data.items.length) oldest = data.items[0].received_at;
  olderButton.hidden = !data.more;
  if (atTop === 0 && !oldest) chat.scrollTop = chat.scrollHeight;
  return data;
}

olderButton.addEventListener("click", () => loadOlder().catch(console.error));

document.getElementById("delete-user").addEventListener("click", async () => {
  if (!confirm(t("Delete every message, survey answer and record of %(user)s? This cannot be undone.", { user: openid }))) return;
  try {
    await postJSON(`/api/users/${encodeURIComponent(openid)}/delete`, { confirm: openid });
    location.href = "/dashboard/users";
  } catch (error) {
    alert(`${t("Deleting failed")}: ${error.message}`);
  }
});
await loadOlder();
chat.scrollTop = chat.scrollHeight;
await loadProgress();

new LiveFeed()
  .onMessage((m) => {
    if (m.openid !== openid || chat.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    chat.append(...bubbles(m));
    chat.scrollTop = chat.scrollHeight;
    loadProgress().catch(console.error);
  })
  .start();
