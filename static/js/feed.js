// The live feed: one WebSocket to /dashboard/ws that reconnects by itself and, after a
// reconnect, asks for the messages it missed (?since=<last received_at>). Duplicates are dropped.

import { t } from "./common.js";

export class LiveFeed {
  constructor({ statusElements = document.querySelectorAll("[data-feed-status]") } = {}) {
    this.listeners = new Set();
    this.statusElements = [...statusElements];
    this.seen = new Set();
    this.seenOrder = [];
    this.lastReceived = null;
    this.retry = 0;
    this.socket = null;
    this.closed = false;
    this.connectedOnce = false;
  }

  /** fn(message) for each new message (also those filled in after a reconnect). */
  onMessage(fn) {
    this.listeners.add(fn);
    return this;
  }

  /** Messages the page already shows (e.g. the last 50 from the API): their ids are dropped if
   * they come again, and the first connect asks for everything since the newest of them. */
  prime(messages) {
    for (const m of messages) {
      this.remember(m);
    }
    return this;
  }

  start() {
    this.connect();
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && (!this.socket || this.socket.readyState > 1)) this.reconnectNow();
    });
    return this;
  }

  status(state, text) {
    for (const node of this.statusElements) {
      node.classList.remove("live", "down", "paused");
      if (state) node.classList.add(state);
      node.textContent = text;
    }
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams();
    // After a disconnect, ask for what we missed; on the first connect only for new messages.
    // A few seconds of overlap: other processes' inserts can commit slightly out of order.
    // Duplicates are dropped by id.
    const since = this.lastReceived || (this.connectedOnce ? this.disconnectedAt : null);
    if (since) params.set("since", new Date(new Date(since).getTime() - 5000).toISOString());
    const query = params.toString();
    return `${scheme}//${location.host}/dashboard/ws${query ? "?" + query : ""}`;
  }

  connect() {
    if (this.closed) return;
    this.status("", this.connectedOnce ? t("Reconnecting…") : t("Connecting…"));
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      if (!this.disconnectedAt) this.disconnectedAt = new Date().toISOString();
      this.status("down", t("Disconnected, retrying…"));
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const delay = Math.min(30000, 1000 * 2 ** this.retry) * (0.75 + Math.random() / 2);
    this.retry = Math.min(this.retry + 1, 5);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    clearTimeout(this.timer);
    if (this.socket && this.socket.readyState <= 1) return;
    this.retry = 0;
    this.connect();
  }

  receive(event) {
    if (event.type === "hello") {
      this.retry = 0;
      this.connectedOnce = true;
      this.disconnectedAt = null;
      this.status("live", t("Live"));
    } else if (event.type === "backlog") {
      for (const m of event.messages) this.deliver(m);
    } else if (event.type === "message") {
      this.deliver(event.message);
    }
  }

  remember(message) {
    if (this.seen.has(message.id)) return false;
    this.seen.add(message.id);
    this.seenOrder.push(message.id);
    if (this.seenOrder.length > 5000) this.seen.delete(this.seenOrder.shift());
    if (!this.lastReceived || message.received_at > this.lastReceived) this.lastReceived = message.received_at;
    return true;
  }

  deliver(message) {
    if (!this.remember(message)) return;
    for (const fn of this.listeners) fn(message);
  }
}
