// The dashboard's ECharts: only the charts and components static/js/ uses (bar, line, pie; grid,
// tooltip, title, legend incl. scroll; canvas renderer), exposed as window.echarts like the full
// build, so static/js/charts.js works with either.
import { init, use } from "echarts/core";
import { BarChart, LineChart, PieChart } from "echarts/charts";
import { GridComponent, LegendComponent, TitleComponent, TooltipComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

use([BarChart, LineChart, PieChart, GridComponent, LegendComponent, TitleComponent, TooltipComponent, CanvasRenderer]);

window.echarts = { init };
