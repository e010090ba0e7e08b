// The message log: server-side search and pagination.

import { el, formValues, getJSON, messageRow, renderPager, syncFormWithURL, t, writeURL } from "./common.js";

const form = document.getElementById("filters");
const tbody = document.getElementById("rows");
const pager = document.getElementById("pager");
const total = document.getElementById("total");

async function load(page = 1) {
  const values = formValues(form);
  writeURL({ ...values, page });
  const data = await getJSON("/api/messages", { ...values, page });
  tbody.replaceChildren(...data.items.map(messageRow));
  if (!data.items.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, t("No messages found."))));
  total.textContent = t("Messages found: %(n)s", { n: data.total });
  renderPager(pager, data, load);
}

syncFormWithURL(form);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  load(1).catch(console.error);
});
load(Number(new URLSearchParams(location.search).get("page")) || 1).catch(console.error);
