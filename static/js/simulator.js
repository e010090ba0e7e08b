// The simulator: chat as a test user through the real /wechat endpoint.

import { el, fmt, getJSON, messageText, postJSON, t, typeLabel } from "./common.js";

const main = document.querySelector("main");
const prefix = main.dataset.prefix;
const chat = document.getElementById("chat");
const userInput = document.getElementById("sim-user");
const modeSelect = document.getElementById("sim-mode");
const form = document.getElementById("sim-form");
const textInput = document.getElementById("sim-text");
const sendButton = document.getElementById("sim-send");

function randomName() {
  return "u" + Math.random().toString(36).slice(2, 8);
}

function currentUser() {
  return prefix + userInput.value.trim();
}

function bubble(kind, text, meta) {
  const node = el("div", { class: `bubble ${kind}` }, text, meta ? el("span", { class: "meta" }, meta) : null);
  chat.append(node);
  chat.scrollTop = chat.scrollHeight;
  return node;
}

function replyText(reply) {
  if (!reply || !Object.keys(reply).length) return null; // "success": WeChat shows nothing
  if (reply.MsgType === "text") return reply.Content;
  if (reply.MsgType === "image") return `[${t("image")} ${reply.Image?.MediaId ?? ""}]`;
  return `[${reply.MsgType}]`; // a reply type the bot does not send today
}

async function loadHistory() {
  chat.replaceChildren();
  const data = await getJSON(`/api/users/${encodeURIComponent(currentUser())}/messages`, { limit: 50 });
  for (const m of data.items) {
    bubble("in", messageText(m), fmt.time(m.received_at));
    if (m.reply_kind && m.reply_kind !== "success") bubble("out", m.reply);
  }
  if (!data.items.length) bubble("sys", t("New conversation with %(user)s", { user: currentUser() }));
}

async function send(payload, shown) {
  const user = userInput.value.trim();
  if (!/^[A-Za-z0-9_-]{1,48}$/.test(user)) {
    bubble("sys", t("The test user name may contain letters, digits, - and _."));
    return;
  }
  sendButton.disabled = true;
  const sent = bubble("in", shown);
  try {
    const result = await postJSON("/api/simulator/send", { user, mode: modeSelect.value, ...payload });
    sent.append(el("span", { class: "meta" }, `${fmt.time(new Date().toISOString())} · ${result.mode}`));
    document.getElementById("exchange-summary").textContent = t("HTTP %(status)s in %(ms)s ms, mode %(mode)s", {
      status: result.status, ms: result.elapsed_ms, mode: result.mode,
    });
    document.getElementById("exchange-request").textContent = result.request_xml;
    document.getElementById("exchange-response").textContent = result.response_body;
    if (result.status !== 200) {
      bubble("sys", t("/wechat answered HTTP %(status)s", { status: result.status }));
      return;
    }
    const text = replyText(result.reply);
    if (text === null) bubble("sys", t("(no reply)"));
    else bubble("out", text).classList.add("reply");
  } catch (error) {
    bubble("sys", `${t("Sending failed")}: ${error.message}`);
  } finally {
    sendButton.disabled = false;
    textInput.focus();
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value;
  if (!text.trim()) return;
  textInput.value = "";
  send({ type: "text", content: text }, text);
});

for (const button of document.querySelectorAll("[data-send]")) {
  button.addEventListener("click", () => {
    const type = button.dataset.send;
    if (type === "event") send({ type, event: button.dataset.event }, `[${typeLabel({ type, event: button.dataset.event })}]`);
    else send({ type }, `[${button.textContent.trim()}]`);
  });
}

document.getElementById("new-user").addEventListener("click", () => {
  userInput.value = randomName();
  localStorage.setItem("simulator-user", userInput.value);
  loadHistory().catch(console.error);
});

userInput.addEventListener("change", () => {
  localStorage.setItem("simulator-user", userInput.value.trim());
  loadHistory().catch(console.error);
});

modeSelect.addEventListener("change", () => localStorage.setItem("simulator-mode", modeSelect.value));

document.getElementById("wipe").addEventListener("click", async () => {
  if (!confirm(t("Delete every test user's messages, user records and survey answers?"))) return;
  const result = await postJSON("/api/simulator/wipe");
  const d = result.deleted;
  chat.replaceChildren();
  bubble("sys", t("Deleted %(messages)s messages and %(users)s users.", { messages: d.messages, users: d.users }));
});

userInput.value = localStorage.getItem("simulator-user") || randomName();
localStorage.setItem("simulator-user", userInput.value);
// Only the modes the endpoint accepts (WECHAT_MESSAGE_MODE) are offered.
const allowedModes = (main.dataset.modes || main.dataset.mode).split(" ");
for (const option of modeSelect.options) option.disabled = !allowedModes.includes(option.value);
const savedMode = localStorage.getItem("simulator-mode");
modeSelect.value = allowedModes.includes(savedMode) ? savedMode : main.dataset.mode;
await loadHistory();
// "Try in the simulator" from the survey editor: the draft's keyword, ready to send.
const say = new URLSearchParams(location.search).get("say");
if (say) textInput.value = say;
textInput.focus();
