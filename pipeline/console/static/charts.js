// The console's charts, drawn with Chart.js (static/vendor/, a global `Chart`): a case's
// activity against its expected level with the flagged windows shaded, a group's lockstep
// (members by time: a bar per round each acted in, a dot at its first action there, when
// the finding says; members by item: a dot where each acted on each item), and the
// overview's counts over time.
// Time axes are linear in epoch ms, labelled in UTC (no date adapter needed).

import { clock, when } from "./ui.js";

const PALETTE = [
  "#2456c9",
  "#d9480f",
  "#2b8a3e",
  "#862e9c",
  "#e67700",
  "#0b7285",
  "#c2255c",
  "#5c940d",
  "#495057",
];
const drawn = new Set();

/** Charts of the page being left: destroyed, so none keeps its canvas or listeners. */
export function destroyCharts() {
  for (const chart of drawn) chart.destroy();
  drawn.clear();
}

function make(canvas, config) {
  const chart = new window.Chart(canvas, config);
  drawn.add(chart);
  return chart;
}

const timeAxis = (min, max) => ({
  type: "linear",
  min,
  max,
  ticks: { callback: (v) => clock(v), maxTicksLimit: 8 },
  grid: { color: "#eceff4" },
});

/** Shades each window of `options.windows` ([start, end, id] in ms) behind the data. */
const flaggedWindows = {
  id: "flaggedWindows",
  beforeDatasetsDraw(chart, _args, options) {
    const { ctx, chartArea, scales } = chart;
    if (!options.windows || !options.windows.length) return;
    ctx.save();
    ctx.fillStyle = options.color || "rgba(180, 35, 24, 0.12)";
    ctx.strokeStyle = "rgba(180, 35, 24, 0.45)";
    for (const [start, end] of options.windows) {
      const left = Math.max(chartArea.left, scales.x.getPixelForValue(start));
      const right = Math.min(chartArea.right, scales.x.getPixelForValue(end));
      if (right <= left) continue;
      ctx.fillRect(left, chartArea.top, right - left, chartArea.bottom - chartArea.top);
      ctx.strokeRect(left, chartArea.top, right - left, chartArea.bottom - chartArea.top);
    }
    ctx.restore();
  },
};

/** The subject's activity (the count each window was judged by), its expected level, and
 * the windows its findings flagged. */
export function activityChart(canvas, series) {
  const order = series.t.map((t, i) => i).sort((a, b) => series.t[a] - series.t[b]);
  const observed = order.map((i) => ({ x: series.t[i], y: series.value[i] }));
  const expected = order
    .filter((i) => series.expected && typeof series.expected[i] === "number")
    .map((i) => ({ x: series.t[i], y: series.expected[i] }));
  const times = [...series.t, ...series.flagged.flatMap((w) => [w[0], w[1]])];
  let min = Math.min(...times);
  let max = Math.max(...times);
  const pad = Math.max((max - min) * 0.05, 60_000);
  min -= pad;
  max += pad;
  return make(canvas, {
    type: "line",
    data: {
      datasets: [
        {
          label: "observed",
          data: observed,
          borderColor: PALETTE[0],
          backgroundColor: PALETTE[0],
          pointRadius: 4,
          tension: 0,
        },
        {
          label: "expected level",
          data: expected,
          borderColor: "#868e96",
          backgroundColor: "#868e96",
          borderDash: [6, 4],
          pointRadius: 2,
          tension: 0,
        },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      scales: { x: timeAxis(min, max), y: { beginAtZero: true, grid: { color: "#eceff4" } } },
      plugins: {
        flaggedWindows: { windows: series.flagged },
        legend: {
          position: "bottom",
          labels: { usePointStyle: true, pointStyle: "line", pointStyleWidth: 28 },
        },
        tooltip: { callbacks: { title: (items) => when(items[0].parsed.x) } },
      },
    },
    plugins: [flaggedWindows],
  });
}

/** A group's lockstep: one row per member, a bar over each round (an item's burst of
 * actions) the member acted in. When the finding says which rounds each member acted in
 * and when (`picture.member_rounds`: {member: [[index of a listed round, ts], ...]}), each
 * is drawn exactly, with a dot at its first action in each round; otherwise (or for a
 * member beyond the ones it lists) a member in all of the rounds is drawn in each, and one
 * in fewer as one pale bar over the rounds' whole span (how many, not which, is known). */
export function lockstepChart(canvas, picture, finding) {
  const listed = picture.rounds;
  const order = listed.map((r, k) => k).sort((a, b) => listed[a].start - listed[b].start);
  const joined = (finding && finding.evidence && finding.evidence.items_joined) || {};
  const members = [...((finding && finding.members) || [])].sort(
    (a, b) => (joined[b] || 0) - (joined[a] || 0) || (a < b ? -1 : 1),
  );
  const acted = picture.member_rounds || {};
  const roundsOf = new Map(
    Object.entries(acted).map(([m, pairs]) => [m, new Map(pairs.map(([k, ts]) => [k, ts]))]),
  );
  const all = listed.length;
  const first = Math.min(...listed.map((r) => r.start));
  const last = Math.max(...listed.map((r) => r.end));
  const known = (m) => roundsOf.has(m);
  const certain = (m) => !known(m) && all > 0 && joined[m] === all;
  const datasets = order.map((k, i) => {
    const r = listed[k];
    return {
      label: `${r.content_id}: ${r.members} of ${r.actors} actors`,
      data: members.map((m) =>
        (known(m) && roundsOf.get(m).has(k)) || certain(m) ? [r.start, r.end] : null,
      ),
      backgroundColor: PALETTE[i % PALETTE.length],
      grouped: false,
      barPercentage: 0.9,
      categoryPercentage: 1,
    };
  });
  const vague = new Set(members.filter((m) => !known(m) && !certain(m)));
  if (vague.size)
    datasets.push({
      label: roundsOf.size
        ? "beyond the members placed: in fewer rounds (which is not recorded)"
        : "in fewer rounds (which ones is not recorded)",
      data: members.map((m) => (vague.has(m) ? [first, last] : null)),
      backgroundColor: "rgba(134, 142, 150, 0.35)",
      grouped: false,
      barPercentage: 0.5,
      categoryPercentage: 1,
    });
  const dots = members.flatMap((m) =>
    known(m) ? [...roundsOf.get(m).values()].map((ts) => ({ x: ts, y: m })) : [],
  );
  if (dots.length)
    datasets.push({
      type: "scatter",
      label: "first action in the round",
      data: dots,
      indexAxis: "y",
      backgroundColor: "#212529",
      borderColor: "#ffffff",
      borderWidth: 1,
      pointRadius: members.length <= 40 ? 3 : 2,
    });
  const rounds = order.length; // the first datasets: one per round
  const pad = Math.max((last - first) * 0.04, 60_000);
  return make(canvas, {
    type: "bar",
    data: { labels: members, datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      indexAxis: "y",
      scales: {
        x: timeAxis(first - pad, last + pad),
        y: {
          type: "category",
          ticks: { display: members.length <= 40, autoSkip: false, font: { size: 10 } },
          grid: { display: false },
        },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          callbacks: {
            title: (items) => items[0].label || items[0].raw.y,
            label: (item) => {
              const m = item.raw && item.raw.y !== undefined ? item.raw.y : members[item.dataIndex];
              const of = `${joined[m] || "?"} of ${all} rounds`;
              if (item.dataset.type === "scatter") return `first action ${when(item.raw.x)} (${of})`;
              return item.datasetIndex < rounds ? `${item.dataset.label} (${of})` : `in ${of}`;
            },
          },
        },
      },
    },
  });
}

/** A group's members by item (`evidence.member_items`: {members, items, acts: [[member
 * index, item index, ts], ...]}): a scatter with one row per member and one column per
 * item, a dot where the member acted on the item, coloured by when (earliest blue, latest
 * red), so a ring's synchrony is a full block and chance overlap a sprinkle. */
export function memberItemsChart(canvas, grid) {
  const { members, items, acts } = grid;
  const times = acts.map((a) => a[2]);
  const first = Math.min(...times);
  const span = Math.max(Math.max(...times) - first, 1);
  const colour = (ts) => `hsl(${Math.round(220 - (220 * (ts - first)) / span)}, 70%, 45%)`;
  const label = (c) => c.content_id + (c.owner ? ` (${c.owner})` : "");
  const data = acts.map(([i, j, ts]) => ({ x: j, y: i, ts }));
  return make(canvas, {
    type: "scatter",
    data: {
      datasets: [
        {
          label: "acted on the item",
          data,
          pointBackgroundColor: data.map((p) => colour(p.ts)),
          pointBorderColor: "#ffffff",
          pointBorderWidth: 1,
          pointRadius: members.length <= 40 && items.length <= 40 ? 4 : 3,
          pointStyle: "rect",
        },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: {
          type: "linear",
          min: -0.5,
          max: items.length - 0.5,
          ticks: {
            stepSize: 1,
            autoSkip: items.length > 20,
            callback: (v) => (Number.isInteger(v) && items[v] ? items[v].content_id : ""),
            font: { size: 10 },
          },
          grid: { display: false },
        },
        y: {
          type: "linear",
          reverse: true,
          min: -0.5,
          max: members.length - 0.5,
          ticks: {
            stepSize: 1,
            display: members.length <= 40,
            autoSkip: false,
            callback: (v) => (Number.isInteger(v) && members[v] !== undefined ? members[v] : ""),
            font: { size: 10 },
          },
          grid: { display: false },
        },
      },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            title: (points) => members[points[0].raw.y],
            label: (point) => `${label(items[point.raw.x])}: ${when(point.raw.ts)}`,
          },
        },
      },
    },
  });
}

/** Counts per bucket of time, one stacked series per name: {name: [[t, n], ...]}. */
export function countsChart(canvas, byName, bucketMs) {
  const times = Object.values(byName).flatMap((points) => points.map((p) => p[0]));
  if (!times.length) return null;
  const start = Math.min(...times);
  const end = Math.max(...times);
  const buckets = [];
  for (let t = start; t <= end && buckets.length < 400; t += bucketMs) buckets.push(t);
  const index = new Map(buckets.map((t, i) => [t, i]));
  const datasets = Object.entries(byName).map(([name, points], i) => {
    const counts = buckets.map(() => 0);
    for (const [t, n] of points) if (index.has(t)) counts[index.get(t)] += n;
    return { label: name, data: counts, backgroundColor: PALETTE[i % PALETTE.length], stack: "all" };
  });
  return make(canvas, {
    type: "bar",
    data: { labels: buckets.map((t) => when(t).slice(5, 16)), datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true, grid: { display: false } }, y: { stacked: true, beginAtZero: true } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}
