// Users: searchable, paginated list with each user's progress in every survey.

import {
  el, fmt, formValues, getJSON, progressBadge, renderPager, syncFormWithURL, t, userCell, writeURL,
} from "./common.js";

const form = document.getElementById("filters");
const tbody = document.getElementById("rows");
const pager = document.getElementById("pager");
const total = document.getElementById("total");

function surveysCell(user) {
  return user.surveys.map((p) => el("div", {}, `${p.title}: `, progressBadge(p)));
}

function row(user) {
  return el(
    "tr",
    {},
    el("td", {}, userCell(user.openid, user.test_user), user.nickname ? el("div", { class: "muted small" }, user.nickname) : null),
    el("td", { class: "time" }, fmt.dateTime(user.first_seen)),
    el("td", { class: "time" }, fmt.dateTime(user.last_seen)),
    el("td", { class: "num" }, fmt.number(user.messages)),
    el("td", {}, user.subscribed ? t("yes") : t("no")),
    el("td", {}, surveysCell(user)),
  );
}

async function load(page = 1) {
  const values = formValues(form);
  writeURL({ ...values, page });
  const data = await getJSON("/api/users", { ...values, page });
  tbody.replaceChildren(...data.items.map(row));
  if (!data.items.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, t("No users found."))));
  total.textContent = t("Users found: %(n)s", { n: data.total });
  renderPager(pager, data, load);
}

syncFormWithURL(form);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  load(1).catch(console.error);
});
load(Number(new URLSearchParams(location.search).get("page")) || 1).catch(console.error);
