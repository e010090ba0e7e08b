// The first-run checklist on the overview: each step read from the server (/api/setup), with the
// one action that completes it. Hidden once every step is done.

import { el, fmt, getJSON, postJSON, t } from "./common.js";

// Names in WeChat's own console (Chinese only): shown as they are, marked as Chinese.
const wechatName = (text) => el("span", { lang: "zh-CN", class: "console-name" }, text);

const MODE_NAMES = { plain: "明文模式", compat: "兼容模式", safe: "安全模式" };

/** Copy `text` to the clipboard; falls back to selecting `field` where the API is missing
 * (plain HTTP on a LAN address is not a secure context). */
async function copy(text, field) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return true;
  }
  if (!field) return false;
  field.focus();
  field.select();
  return document.execCommand("copy");
}

/** A read-only value with a copy button. */
export function copyField(label, value, { name } = {}) {
  const field = el("input", { type: "text", readonly: true, value, class: "copy-value", "data-copy": name || "" });
  const button = el("button", { type: "button", class: "copy" }, t("Copy"));
  button.addEventListener("click", async () => {
    let ok = false;
    try {
      ok = await copy(value, field);
    } catch {
      ok = false;
    }
    button.textContent = ok ? t("Copied") : t("Select and copy by hand");
    setTimeout(() => (button.textContent = t("Copy")), 2000);
  });
  return el("div", { class: "copy-row" }, el("span", { class: "copy-label" }, label), field, button);
}

function doneLine(text, at) {
  return el("p", { class: "step-detail" }, at ? `${text} (${fmt.dateTime(at)})` : text);
}

function handshakeStep(step) {
  const title = t("Connect the server address");
  if (step.done) return [title, doneLine(t("WeChat verified the server address."), step.at)];
  const fields = [copyField([t("URL"), " ", wechatName("服务器地址")], step.url, { name: "url" }),
    copyField([t("Token"), " ", wechatName("令牌")], step.token, { name: "token" }),];
  if (step.encoding_aes_key) {
    fields.push(copyField(["EncodingAESKey", " ", wechatName("消息加解密密钥")], step.encoding_aes_key, { name: "aes" }));
  }
  return [
    title,
    el(
      "p",
      { class: "step-detail" },
      t("In the WeChat Official Accounts Platform open"),
      " ",
      wechatName("设置与开发 → 基本配置 → 服务器配置"),
      t(", click"),
      " ",
      wechatName("修改配置"),
      t(", paste these values, choose the message mode"),
      " ",
      wechatName(MODE_NAMES[step.message_mode] || step.message_mode),
      " ",
      t("and submit. WeChat then calls this server to check it; this step turns green when it has."),
    ),
    el("div", { class: "copy-fields" }, fields),
    step.url.startsWith("https://")
      ? null
      : el("p", { class: "step-detail warn" }, t("WeChat only calls public addresses on port 80 or 443: open the dashboard through the address WeChat will use (behind nginx, with HTTPS).")),
  ];
}

function firstMessageStep(step) {
  const title = t("Receive a first message");
  if (step.done) return [title, doneLine(t("A real user's message arrived."), step.at)];
  return [
    title,
    el(
      "p",
      { class: "step-detail" },
      t("Follow the account in WeChat (its QR code is under"),
      " ",
      wechatName("设置与开发 → 公众号设置"),
      t(") and send it any message. Simulator messages do not count."),
    ),
  ];
}

function apiStep(step, reload) {
  const title = t("Set the AppID and AppSecret");
  if (step.done) return [title, doneLine(t("The WeChat API answered: an access_token was fetched."), step.at)];
  if (!step.credentials) {
    return [
      title,
      el(
        "p",
        { class: "step-detail" },
        t("Copy AppID and AppSecret from"),
        " ",
        wechatName("设置与开发 → 基本配置 → 公众号开发信息"),
        t(", set WECHAT_APP_ID and WECHAT_APP_SECRET in the service's settings and restart it. Add this server's public IP address to the IP whitelist there too."),
      ),
    ];
  }
  const result = el("p", { class: "step-detail", id: "check-api-result" });
  const button = el("button", { type: "button", id: "check-api" }, t("Test the connection"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.textContent = t("Asking WeChat for an access_token…");
    try {
      const answer = await postJSON("/api/setup/check-api");
      if (answer.ok) await reload();
      else result.textContent = `${t("WeChat refused:")} ${answer.error}`;
    } catch (error) {
      result.textContent = String(error.message || error);
    } finally {
      button.disabled = false;
    }
  });
  return [
    title,
    el("p", { class: "step-detail" }, t("AppID %(id)s is set; no access_token has been fetched with it yet.", { id: step.app_id })),
    el("div", {}, button),
    result,
  ];
}

function surveyStep(step) {
  const title = t("Publish a survey");
  if (step.done) {
    return [
      title,
      el(
        "p",
        { class: "step-detail" },
        t("Available to respondents:"),
        " ",
        step.surveys.flatMap((s, i) => [i ? ", " : "", el("a", { href: `/dashboard/surveys/${encodeURIComponent(s.id)}`, "data-content": true }, s.title)]),
      ),
    ];
  }
  return [title, el("p", { class: "step-detail" }, t("No survey is available yet: add a survey definition and restart the service."))];
}

function menuStep(step) {
  const title = t("Push the custom menu");
  if (step.done) return [title, doneLine(t("The custom menu was created."), step.at)];
  return [
    title,
    el("p", { class: "step-detail" }, t("Edit deploy/menu.example.yaml to your liking, then run on the server:")),
    el("div", { class: "copy-fields" }, copyField(t("Command"), step.command, { name: "menu" })),
  ];
}

const RENDER = { handshake: handshakeStep, first_message: firstMessageStep, api: apiStep, survey: surveyStep, menu: menuStep };

/** Draw the checklist into `container` (a <section>); returns a function that reloads it. */
export function checklist(container) {
  async function load() {
    const data = await getJSON("/api/setup");
    container.hidden = data.complete;
    container.dataset.loaded = "1";
    if (data.complete) return;
    const done = data.steps.filter((s) => s.done).length;
    const items = data.steps.map((step) => {
      const [title, ...details] = RENDER[step.id](step, load);
      return el(
        "li",
        { class: `step ${step.done ? "done" : "todo"}`, dataset: { step: step.id, done: step.done ? "1" : "0" } },
        el("span", { class: "step-mark", "aria-hidden": "true" }, step.done ? "✓" : ""),
        el("div", { class: "step-body" }, el("strong", {}, title), details),
      );
    });
    container.replaceChildren(
      el("div", { class: "card-head" }, el("h2", {}, t("Getting started")), el("span", { class: "muted" }, t("%(done)s of %(total)s done", { done, total: data.steps.length }))),
      el("ol", { class: "steps" }, items),
    );
  }
  return load;
}
