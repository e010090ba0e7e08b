// The message log: server-side search and pagination.

import { messageRow, searchPage, t } from "./common.js";

searchPage({
  api: "/api/messages",
  row: messageRow,
  columns: 6,
  empty: t("No messages found."),
  totalText: (n) => t("Messages found: %(n)s", { n }),
});
