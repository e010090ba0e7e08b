// Users: searchable, paginated list with each user's progress in every survey.

import { el, fmt, progressBadge, searchPage, t, userCell } from "./common.js";

function surveysCell(user) {
  return user.surveys.map((p) => el("div", {}, el("span", { "data-content": true }, `${p.title}: `), progressBadge(p)));
}

function row(user) {
  return el(
    "tr",
    {},
    el("td", {}, userCell(user.openid, user.test_user), user.nickname ? el("div", { class: "muted small", "data-content": true }, user.nickname) : null),
    el("td", { class: "time" }, fmt.dateTime(user.first_seen)),
    el("td", { class: "time" }, fmt.dateTime(user.last_seen)),
    el("td", { class: "num" }, fmt.number(user.messages)),
    el("td", {}, user.subscribed ? t("yes") : t("no")),
    el("td", {}, surveysCell(user)),
  );
}

searchPage({
  api: "/api/users",
  row,
  columns: 6,
  empty: t("No users found."),
  totalText: (n) => t("Users found: %(n)s", { n }),
});
