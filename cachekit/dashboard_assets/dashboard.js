// cachekit's admin dashboard: redraws the page from ./stats and ./history every few
// seconds. No library and no build step; only the fields named here are read, so the
// JSON may gain others. Data goes into the page as text nodes, never as markup.
"use strict";

(() => {
  const REFRESH_MS = 1000 * (Number(document.body.dataset.refreshSeconds) || 5);
  const RESULTS = ["hit", "stale", "revalidated", "miss", "collapsed", "bypass"];
  const RESULT_COLORS = {
    hit: "#2da44e", stale: "#8fd19e", revalidated: "#54aeff",
    miss: "#cf222e", collapsed: "#bf8700", bypass: "#8c959f",
  };
  const LINE_COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df",
    "#bc4c00", "#0598bc", "#bf3989", "#57606a", "#4d2d00"];
  const CHART_HANDLERS = LINE_COLORS.length;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 880, H = 260, LEFT = 44, RIGHT = 12, TOP = 12, BOTTOM = 28;
  const NONE = "\u2013";

  const $ = (id) => document.getElementById(id);
  const num = (value) => (typeof value === "number" && isFinite(value) ? value : null);
  const percent = (part, whole) => (whole ? `${(100 * part / whole).toFixed(1)} %` : NONE);
  const ms = (value) => (num(value) === null ? NONE : `${value.toFixed(1)} ms`);
  const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

  function bytes(value) {
    if (num(value) === null) return NONE;
    const units = ["B", "KiB", "MiB", "GiB"];
    let size = value, unit = 0;
    while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
    return unit ? `${size.toFixed(1)} ${units[unit]}` : `${size} B`;
  }

  function element(tag, attributes = {}, text = null, namespace = null) {
    const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }
  const svg = (tag, attributes = {}, text = null) => element(tag, attributes, text, SVG);

  async function getJSON(path) {
    const answer = await fetch(path, {
      headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
    });
    if (answer.status === 401) {  // the session ended: the page becomes the sign-in form
      window.location.reload();
      throw new Error("signed out");
    }
    if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
    return answer.json();
  }

  function totalsOf(history) {
    const handlers = Object.entries((history && history.handlers) || {});
    const all = { requests: 0, fills: 0, fillMs: 0 };
    for (const result of RESULTS) all[result] = 0;
    for (const [, figures] of handlers) {
      const totals = figures.totals || {};
      for (const result of RESULTS) all[result] += num(totals[result]) || 0;
      all.requests += num(totals.requests) || 0;
      all.fills += num(totals.fills) || 0;
      all.fillMs += (num(totals.fill_ms) || 0) * (num(totals.fills) || 0);
    }
    return { handlers, all };
  }

  function drawCards(process, all) {
    $("hit-ratio").textContent = percent(all.hit + all.stale, all.requests);
    $("requests").textContent = all.requests.toLocaleString();
    $("fill-latency").textContent = all.fills ? ms(all.fillMs / all.fills) : NONE;
    const open = process.breaker_open === true;
    $("breaker").textContent = open ? "open" : "closed";
    $("breaker").className = open ? "bad" : "good";
    const kind = typeof process.store === "string" ? process.store : "";
    let size = NONE, note = `${kind} store`;
    if (num(process.entries) !== null) {
      size = `${process.entries.toLocaleString()} entries`;
      note = `${kind} store, ${bytes(process.memory_bytes)}`;
    } else if (num(process.near_entries) !== null) {
      size = `${process.near_entries.toLocaleString()} entries`;
      note = `${kind} store; near cache ${bytes(process.near_bytes)}`;
    }
    $("store-size").textContent = size;
    $("store-size-note").textContent = note;
  }

  // Handlers in the chart: the busiest of the window, colored by name order (stable).
  function charted(handlers) {
    const windowed = (figures) => (figures.requests || []).reduce((a, b) => a + (num(b) || 0), 0);
    const busiest = [...handlers].sort((a, b) => windowed(b[1]) - windowed(a[1]))
      .filter(([, figures]) => windowed(figures) > 0).slice(0, CHART_HANDLERS);
    return busiest.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }

  function drawChart(history, handlers) {
    const times = (history.times || []).map(num);
    const chart = $("chart"), legend = $("legend");
    const lines = charted(handlers);
    if (!times.length || !lines.length) return;
    const end = times[times.length - 1];
    const start = Math.min(times[0] - (num(history.interval_seconds) || 10), end - 60);
    const x = (t) => LEFT + (W - LEFT - RIGHT) * (t - start) / (end - start);
    const y = (ratio) => TOP + (H - TOP - BOTTOM) * (1 - ratio);
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "hit ratio per handler over time",
    });
    for (const ratio of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y(ratio), y2: y(ratio), class: "grid" }));
      root.append(svg("text", { x: LEFT - 6, y: y(ratio) + 4, class: "axis", "text-anchor": "end" },
        `${100 * ratio}%`));
    }
    for (let tick = 0; tick <= 4; tick += 1) {
      const t = start + (end - start) * tick / 4;
      root.append(svg("text", {
        x: x(t), y: H - 8, class: "axis", "text-anchor": tick === 0 ? "start" : tick === 4 ? "end" : "middle",
      }, clock(t)));
    }
    legend.replaceChildren();
    lines.forEach(([name, figures], index) => {
      const color = LINE_COLORS[index % LINE_COLORS.length];
      const ratios = figures.hit_ratio || [], requests = figures.requests || [];
      let segment = [];
      const flush = () => {
        if (segment.length > 1) {
          root.append(svg("polyline", { points: segment.join(" "), stroke: color, class: "line" }));
        }
        segment = [];
      };
      times.forEach((t, i) => {
        const ratio = num(ratios[i]);
        if (ratio === null || t === null) { flush(); return; }
        segment.push(`${x(t).toFixed(1)},${y(ratio).toFixed(1)}`);
        const dot = svg("circle", { cx: x(t), cy: y(ratio), r: 3, fill: color, class: "dot" });
        dot.append(svg("title", {}, `${name} ${clock(t)}: ${(100 * ratio).toFixed(1)} % of ${requests[i]} requests`));
        root.append(dot);
      });
      flush();
      const last = [...ratios].reverse().find((ratio) => num(ratio) !== null);
      const item = element("li");
      item.append(element("span", { class: `swatch c${index}` }), `${name} `,
        element("small", {}, last === undefined ? "" : `${(100 * last).toFixed(0)} %`));
      legend.append(item);
    });
    chart.replaceChildren(root);
  }

  function drawResults(all) {
    const box = $("results");
    const bar = svg("svg", { viewBox: `0 0 ${W} 24`, role: "img", "aria-label": "requests by result" });
    let offset = 0;
    const list = element("ul", { class: "legend" });
    for (const result of RESULTS) {
      const count = all[result];
      const width = all.requests ? (W * count) / all.requests : 0;
      if (width > 0) {
        const part = svg("rect", { x: offset, y: 0, width, height: 24, fill: RESULT_COLORS[result] });
        part.append(svg("title", {}, `${result}: ${count}`));
        bar.append(part);
      }
      offset += width;
      const item = element("li");
      item.append(element("span", { class: `swatch r-${result}` }),
        `${result} ${count.toLocaleString()} (${percent(count, all.requests)})`);
      list.append(item);
    }
    box.replaceChildren(bar, list);
  }

  function drawTable(handlers) {
    const rows = [...handlers].sort((a, b) =>
      ((num(b[1].totals?.miss) || 0) - (num(a[1].totals?.miss) || 0)) || (a[0] < b[0] ? -1 : 1));
    const body = $("handlers").tBodies[0];
    body.replaceChildren(...rows.map(([name, figures]) => {
      const totals = figures.totals || {};
      const row = element("tr");
      row.append(element("td", {}, name));
      for (const result of RESULTS) {
        row.append(element("td", { class: "n" }, (num(totals[result]) || 0).toLocaleString()));
      }
      const served = (num(totals.hit) || 0) + (num(totals.stale) || 0);
      row.append(element("td", { class: "n" }, percent(served, num(totals.requests) || 0)));
      row.append(element("td", { class: "n" }, ms(totals.fill_ms)));
      return row;
    }));
  }

  // Whose figures the history holds (it says; /stats says so too, and names the workers).
  function scopeOf(history, stats) {
    const scope = (history && history.scope) || (stats && stats.scope);
    let workers = num(history && history.workers);
    if (workers === null && stats && Array.isArray(stats.workers)) workers = stats.workers.length;
    if (scope === "cluster" && workers !== null && workers >= 1) {
      return `all ${workers} worker${workers === 1 ? "" : "s"}`;
    }
    return "this worker";
  }

  async function refresh() {
    try {
      const [stats, history] = await Promise.all([getJSON("stats"), getJSON("history")]);
      const process = (stats && stats.process) || {};
      const { handlers, all } = totalsOf(history);
      drawCards(process, all);
      drawChart(history, handlers);
      drawResults(all);
      drawTable(handlers);
      const store = typeof process.store === "string" ? `${process.store} store, ` : "";
      const scope = scopeOf(history, stats);
      $("meta").textContent = `${scope}; ${store}pid ${stats.pid ?? "?"}`;
      $("scope").textContent = `Figures of ${scope}`;
      $("updated").textContent = `updated ${clock(Date.now() / 1000)}`;
      $("updated").className = "";
    } catch (error) {
      $("updated").textContent = `not updated: ${error.message}`;
      $("updated").className = "bad";
    }
  }

  refresh();
  window.setInterval(refresh, REFRESH_MS);
})();
