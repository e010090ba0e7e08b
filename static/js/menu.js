// The custom-menu editor: up to 3 buttons of up to 5 sub-buttons, every kind WeChat takes, its
// limits (names in UTF-8 bytes, keys, URLs) shown as you type, a phone preview, push to WeChat and
// read from WeChat. The server's check (the one `menu check` runs) is the judge.

import { debounce, el, fmt, getJSON, t, xsrfToken } from "./common.js";

const list = document.getElementById("menu-buttons");
const preview = document.getElementById("menu-preview");
const issuesList = document.getElementById("menu-issues");
const statusLine = document.getElementById("menu-status");
const pushedLine = document.getElementById("menu-pushed");
const encoder = new TextEncoder();
let info = null;
let menu = { button: [] };

const TYPE_LABELS = {
  click: () => t("Click: answer like a keyword"),
  view: () => t("Open a web page"),
  miniprogram: () => t("Open a mini program"),
  scancode_push: () => t("Scan a code"),
  scancode_waitmsg: () => t("Scan a code and wait for the answer"),
  pic_sysphoto: () => t("Take a photo"),
  pic_photo_or_album: () => t("Photo or album"),
  pic_weixin: () => t("WeChat album"),
  location_select: () => t("Send a location"),
  media_id: () => t("Send permanent material"),
  view_limited: () => t("Open permanent material"),
  article_id: () => t("Send a published article"),
  article_view_limited: () => t("Open a published article"),
};
const FIELD_LABELS = {
  key: () => t("Key"), url: () => t("URL"), appid: () => t("Mini program AppID"),
  pagepath: () => t("Mini program page"), media_id: () => t("Permanent media_id"), article_id: () => t("Article id"),
};

async function post(path, data) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-XSRFToken": xsrfToken() },
    body: JSON.stringify(data),
  });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

function bytes(text) {
  return encoder.encode(text || "").length;
}

function limited(label, value, limit, onInput, attrs = {}) {
  const field = el("input", { type: "text", value: value || "", ...attrs });
  const counter = el("span", { class: "muted counter" });
  const count = () => {
    const n = bytes(field.value);
    counter.textContent = t("%(n)s / %(max)s bytes", { n, max: limit });
    counter.classList.toggle("over", n > limit);
  };
  field.addEventListener("input", () => { onInput(field.value); count(); changed(); });
  count();
  return el("label", { class: "field" }, el("span", {}, label), field, counter);
}

function leafFields(item, box) {
  const fields = info.limits.types[item.type] || [];
  for (const f of fields) {
    const limit = f === "key" ? info.limits.key_bytes : info.limits.url_bytes;
    box.append(limited(FIELD_LABELS[f](), item[f], limit, (v) => { item[f] = v; }, { class: `menu-${f}` }));
  }
}

function typeSelect(item, rerender) {
  const select = el("select", { class: "menu-type", "aria-label": t("Kind") },
    ...Object.keys(info.limits.types).map((k) => el("option", { value: k, selected: k === item.type }, TYPE_LABELS[k]())));
  select.addEventListener("change", () => {
    for (const f of info.limits.types[item.type] || []) delete item[f];
    item.type = select.value;
    rerender();
    changed();
  });
  return select;
}

function subItem(button, sub, j) {
  const li = el("li", { class: "menu-sub" });
  const render = () => {
    const fields = el("div", { class: "menu-fields" });
    leafFields(sub, fields);
    li.replaceChildren(
      limited(t("Button name"), sub.name, info.limits.sub_name_bytes, (v) => { sub.name = v; }, { class: "menu-name" }),
      typeSelect(sub, render),
      fields,
      el("button", { type: "button", class: "link danger", onclick: () => { button.sub_button.splice(j, 1); if (!button.sub_button.length) { delete button.sub_button; button.type = "click"; button.key = ""; } renderAll(); } }, t("Delete")),
    );
  };
  render();
  return li;
}

function buttonItem(button, i) {
  const li = el("li", { class: "menu-button" });
  const head = el("div", { class: "menu-head" },
    limited(t("Button name"), button.name, info.limits.name_bytes, (v) => { button.name = v; }, { class: "menu-name" }));
  const body = el("div", { class: "menu-body" });
  if (button.sub_button) {
    body.append(el("ol", { class: "menu-subs" }, ...button.sub_button.map((sub, j) => subItem(button, sub, j))));
    if (button.sub_button.length < info.limits.sub_buttons) {
      body.append(el("button", { type: "button", class: "menu-add-sub", onclick: () => { button.sub_button.push({ name: "", type: "click", key: "" }); renderAll(); } }, t("Add a sub-button")));
    }
  } else {
    const fields = el("div", { class: "menu-fields" });
    const render = () => { fields.replaceChildren(); leafFields(button, fields); };
    head.append(typeSelect(button, () => { render(); }));
    render();
    body.append(fields, el("button", {
      type: "button", class: "menu-add-sub",
      onclick: () => {
        const first = { name: button.name ? `${button.name} 1` : "", type: button.type || "click" };
        for (const f of info.limits.types[first.type] || []) first[f] = button[f] || "";
        for (const k of Object.keys(button)) if (k !== "name") delete button[k];
        button.sub_button = [first];
        renderAll();
      },
    }, t("Turn into a group of sub-buttons")));
  }
  head.append(
    el("button", { type: "button", class: "link", "aria-label": t("Move up"), onclick: () => { if (i > 0) { [menu.button[i - 1], menu.button[i]] = [menu.button[i], menu.button[i - 1]]; renderAll(); } } }, "←"),
    el("button", { type: "button", class: "link", "aria-label": t("Move down"), onclick: () => { if (i < menu.button.length - 1) { [menu.button[i + 1], menu.button[i]] = [menu.button[i], menu.button[i + 1]]; renderAll(); } } }, "→"),
    el("button", { type: "button", class: "link danger", onclick: () => { menu.button.splice(i, 1); renderAll(); } }, t("Delete")),
  );
  li.append(head, body);
  return li;
}

function renderPreview() {
  preview.replaceChildren(...menu.button.map((button) =>
    el("div", { class: "phone-button" },
      button.sub_button ? el("ul", { class: "phone-subs" }, ...button.sub_button.map((s) => el("li", {}, s.name || "…"))) : null,
      el("span", {}, (button.sub_button ? "≡ " : "") + (button.name || "…")))));
}

function renderAll() {
  list.replaceChildren(...menu.button.map(buttonItem));
  document.getElementById("menu-add").disabled = menu.button.length >= info.limits.buttons;
  changed();
}

function showIssues(issues, unclaimed = []) {
  issuesList.replaceChildren(
    ...(issues || []).map((text) => el("li", {}, text)),
    ...(unclaimed.length ? [el("li", { class: "warning" }, t("No survey or rule answers these click keys: %(keys)s", { keys: unclaimed.join(", ") }))] : []),
  );
}

const check = debounce(async () => {
  const { body } = await post("/api/menu/check", { menu });
  showIssues(body.issues, body.unclaimed);
}, 300);

function changed() {
  renderPreview();
  if (menu.button.length) check();
  else showIssues([]);
}

function showPushed(pushed) {
  pushedLine.textContent = pushed
    ? t("Last pushed %(when)s by %(who)s", { when: fmt.dateTime(pushed.pushed_at), who: pushed.pushed_by })
    : t("Not pushed from here yet.");
}

document.getElementById("menu-add").addEventListener("click", () => {
  menu.button.push({ name: "", type: "click", key: "" });
  renderAll();
});
document.getElementById("menu-push").addEventListener("click", async () => {
  statusLine.textContent = t("Pushing…");
  const { status, body } = await post("/api/menu/push", { menu });
  if (status === 200) {
    showPushed(body.pushed);
    showIssues([], body.unclaimed);
    statusLine.textContent = t("Pushed: users see it when they next enter the account.");
  } else if (status === 422) {
    showIssues(body.issues);
    statusLine.textContent = t("Not pushed: %(n)s mistake(s).", { n: body.issues.length });
  } else {
    statusLine.textContent = t("Not pushed: %(e)s", { e: body.error || status });
  }
});
document.getElementById("menu-pull").addEventListener("click", async () => {
  const { status, body } = await post("/api/menu/pull", {});
  if (status === 200 && body.menu) {
    menu = body.menu;
    renderAll();
    statusLine.textContent = t("Read the menu WeChat has now.");
  } else if (status === 200) {
    statusLine.textContent = t("WeChat has no custom menu for this account.");
  } else {
    statusLine.textContent = t("Not read: %(e)s", { e: body.error || status });
  }
});

info = await getJSON("/api/menu");
document.getElementById("menu-no-api").hidden = info.configured;
document.getElementById("menu-push").disabled = !info.configured;
document.getElementById("menu-pull").disabled = !info.configured;
if (info.pushed) menu = info.pushed.menu;
showPushed(info.pushed);
renderAll();
