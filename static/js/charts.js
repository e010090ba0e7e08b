// Thin helpers around ECharts (loaded as a classic script: window.echarts).

import { t } from "./common.js";

const palette = ["#07c160", "#1a73e8", "#f5a623", "#e8453c", "#8e44ad", "#16a085", "#d35400", "#7f8c8d"];

const charts = new Set();
window.addEventListener("resize", () => {
  for (const chart of charts) chart.resize();
});

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
    grid: { left: 48, right: 16, top: 24, bottom: 40, containLabel: true },
    tooltip: { trigger: "axis", renderMode: "richText" },
    ...extra,
  };
}
