/* A small SVG chart for the dashboard: lines, steps and points on numeric or time x axes. No dependencies. */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fed", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#5c940d", "#862e9c",
    "#495057", "#d9480f"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return nice * mag;
  }

  function ticks(lo, hi, count, integer) {
    if (!(hi > lo)) { hi = lo + 1; lo = lo - (integer ? 0 : 1); }
    let step = niceStep(hi - lo, count);
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (a >= 1000) return v.toLocaleString(undefined, { maximumFractionDigits: 0 });
    return String(Math.round(v * 1000) / 1000);
  }

  function fmtTime(ms, spanMs) {
    const d = new Date(ms);
    const iso = d.toISOString();
    return spanMs > 2 * 86400000 ? iso.slice(0, 10) : iso.slice(5, 16).replace("T", " ");
  }

  /**
   * render(container, {series:[{name, points:[[x,y],...], color?, kind?:"line"|"points"|"step", dash?}],
   *                    xType?:"number"|"time", xLabel?, yLabel?, height?, integerX?, markers?:[{x, label}]})
   */
  function render(container, opts) {
    container.innerHTML = "";
    container.classList.add("chart");
    const series = (opts.series || []).map((s, i) => ({ ...s, color: s.color || PALETTE[i % PALETTE.length],
      points: (s.points || []).filter(p => p[0] !== null && p[1] !== null && isFinite(p[0]) && isFinite(p[1])) }));
    const all = series.flatMap(s => s.points);
    const W = 900, H = opts.height || 300, L = 64, R = 16, T = 14, B = opts.xLabel ? 46 : 30;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "chart" }, container);
    if (!all.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg).textContent = opts.empty || "no data yet";
      return svg;
    }
    let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
    let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
    if (opts.xMin !== undefined && opts.xMin !== null) x0 = Math.min(x0, opts.xMin);
    if (opts.xMax !== undefined && opts.xMax !== null) x1 = Math.max(x1, opts.xMax);
    if (x1 === x0) { x0 -= opts.integerX ? 0 : 1; x1 += 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    for (const t of ticks(y0, y1, 5, false)) {
      el("line", { class: "grid", x1: L, x2: W - R, y1: sy(t), y2: sy(t) }, svg);
      el("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, svg).textContent = fmt(t);
    }
    const time = opts.xType === "time";
    const xt = time ? ticks(x0, x1, 6, false) : ticks(x0, x1, Math.min(10, Math.max(2, x1 - x0)), !!opts.integerX);
    for (const t of xt) {
      if (t < x0 || t > x1) continue;
      el("line", { class: "grid", x1: sx(t), x2: sx(t), y1: T, y2: H - B }, svg);
      el("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, svg).textContent =
        time ? fmtTime(t, x1 - x0) : fmt(t);
    }
    el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
    el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }, svg);
    if (opts.xLabel) el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, svg).textContent = opts.xLabel;
    if (opts.yLabel) {
      const t = el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
        transform: `rotate(-90 14 ${(T + H - B) / 2})` }, svg);
      t.textContent = opts.yLabel;
    }
    for (const s of series) {
      const kind = s.kind || "line";
      if (kind === "line" || kind === "step") {
        let d = "";
        s.points.forEach((p, i) => {
          if (i === 0) d += `M${sx(p[0])},${sy(p[1])}`;
          else if (kind === "step") d += `H${sx(p[0])}V${sy(p[1])}`;
          else d += `L${sx(p[0])},${sy(p[1])}`;
        });
        el("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2,
          "stroke-dasharray": s.dash || "none", "stroke-linejoin": "round" }, svg);
      }
      if (kind === "points" || s.showPoints) {
        for (const p of s.points) {
          const c = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.radius || 4, fill: s.color,
            "fill-opacity": s.opacity || 0.9, stroke: "#fff", "stroke-width": 1 }, svg);
          const label = p[2] || `${s.name}: ${time ? fmtTime(p[0], 0) : fmt(p[0])}, ${fmt(p[1])}`;
          el("title", {}, c).textContent = label;
        }
      }
    }
    for (const m of opts.markers || []) {
      if (m.x < x0 || m.x > x1) continue;
      el("line", { x1: sx(m.x), x2: sx(m.x), y1: T, y2: H - B, stroke: m.color || "#c92a2a", "stroke-dasharray": "4 3" }, svg);
      if (m.label) el("text", { x: sx(m.x) + 4, y: T + 12 }, svg).textContent = m.label;
    }
    if (opts.legend !== false && series.length) {
      const legend = document.createElement("div");
      legend.className = "legend";
      for (const s of series) {
        const item = document.createElement("span");
        const sw = document.createElement("span");
        sw.className = "swatch"; sw.style.background = s.color;
        item.appendChild(sw); item.appendChild(document.createTextNode(s.name));
        legend.appendChild(item);
      }
      container.appendChild(legend);
    }
    return svg;
  }

  window.AEChart = { render, fmt, PALETTE };
})();
