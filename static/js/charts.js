// Thin helpers around ECharts (loaded as a classic script: window.echarts).

import { t } from "./common.js";

const palette = ["#07c160", "#1a73e8", "#f5a623", "#e8453c", "#8e44ad", "#16a085", "#d35400", "#7f8c8d"];

const charts = new Set();
window.addEventListener("resize", () => {
  for (const chart of charts) chart.resize();
});

/** A phone-sized screen: charts wrap their labels, put percentages inside, legends below. */
export function narrow() {
  return window.matchMedia("(max-width: 600px)").matches;
}

/** Category-axis labels that wrap instead of being cut (at most `width` pixels wide). */
export function wrappedLabels(wide = 220, phone = 110) {
  return { width: narrow() ? phone : wide, overflow: "break", lineHeight: 14 };
}

/** On a phone, give a bar chart of `rows` categories the height its wrapped labels need. */
export function fitRows(instance, rows, { perRow = 36, extra = 40 } = {}) {
  const dom = instance.getDom();
  const height = narrow() ? `${rows * perRow + extra}px` : "";
  if (dom.style.height !== height) {
    dom.style.height = height;
    instance.resize();
  }
}

export function chart(element) {
  const instance = window.echarts.init(element, null, { renderer: "canvas" });
  charts.add(instance);
  return instance;
}

/** A grey "no data yet" note over an empty chart (ECharts draws bare axes otherwise). */
export function emptyNote(hasData) {
  return {
    show: !hasData,
    text: t("No data yet"),
    left: "center",
    top: "middle",
    textStyle: { color: "#9ca3af", fontSize: 13, fontWeight: "normal" },
  };
}

export function baseOption(extra) {
  return {
    color: palette,
    animationDuration: 300,
    grid: narrow()
      ? { left: 4, right: 8, top: 24, bottom: 8, containLabel: true }
      : { left: 48, right: 16, top: 24, bottom: 40, containLabel: true },
    tooltip: { trigger: "axis", renderMode: "richText" },
    ...extra,
  };
}
