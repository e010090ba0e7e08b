// The media library: list permanent material by kind (thumbnails for images), upload a file after
// checking WeChat's size and format limits here and on the server.

import { el, fmt, getJSON, t, xsrfToken } from "./common.js";

const typeSelect = document.getElementById("media-type");
const rows = document.getElementById("media-rows");
const statusLine = document.getElementById("media-status");
const issuesList = document.getElementById("media-issues");
const limitsLine = document.getElementById("media-limits");
let limits = {};

function showLimits() {
  const limit = limits[typeSelect.value];
  if (!limit) return;
  limitsLine.textContent = t("At most %(mb)s MB; %(formats)s", { mb: limit.max_bytes / 1048576, formats: limit.formats.join(", ") })
    + (typeSelect.value === "voice" ? t(", at most 60 s") : "");
}

function localProblems(file) {
  const limit = limits[typeSelect.value];
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  const out = [];
  if (!limit.formats.includes(ext)) out.push(t("%(name)s: must be %(formats)s", { name: file.name, formats: limit.formats.join(", ") }));
  if (file.size > limit.max_bytes) out.push(t("%(name)s is over %(mb)s MB", { name: file.name, mb: limit.max_bytes / 1048576 }));
  return out;
}

async function load() {
  const data = await getJSON("/api/media", { type: typeSelect.value });
  limits = data.limits;
  showLimits();
  document.getElementById("media-no-api").hidden = data.configured;
  document.getElementById("media-send").disabled = !data.configured;
  if (!data.configured) return;
  document.getElementById("media-counts").textContent = t("Images %(i)s, voice %(v)s, videos %(d)s", { i: data.counts.image, v: data.counts.voice, d: data.counts.video });
  rows.replaceChildren(...data.items.map((item) => el("tr", {},
    el("td", {}, item.url ? el("img", { src: item.url, alt: "", class: "thumb", referrerpolicy: "no-referrer", loading: "lazy" }) : ""),
    el("td", {}, item.name),
    el("td", {}, el("code", { class: "media-id" }, item.media_id)),
    el("td", {}, item.update_time ? fmt.dateTime(new Date(item.update_time * 1000).toISOString()) : ""))));
  if (!data.items.length) rows.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, t("Nothing of this kind yet."))));
}

document.getElementById("media-upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("media-file").files[0];
  if (!file) return;
  const problems = localProblems(file);
  issuesList.replaceChildren(...problems.map((p) => el("li", {}, p)));
  if (problems.length) return;
  statusLine.textContent = t("Uploading…");
  const query = new URLSearchParams({ type: typeSelect.value, name: file.name, title: document.getElementById("media-title").value });
  const response = await fetch(`/api/media/upload?${query}`, {
    method: "POST", credentials: "same-origin", headers: { "X-XSRFToken": xsrfToken() }, body: file,
  });
  const body = await response.json().catch(() => ({}));
  if (response.ok) {
    statusLine.textContent = t("Uploaded: %(id)s", { id: body.media_id });
    load();
  } else {
    issuesList.replaceChildren(...(body.issues || [body.error]).map((p) => el("li", {}, p)));
    statusLine.textContent = t("Not uploaded.");
  }
});
typeSelect.addEventListener("change", load);
load();
