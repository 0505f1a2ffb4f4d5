// claid serve run explorer: run settings and headline metrics, queries worst first,
// each query's saved results marked positive / junk / negative / removed, and with two
// runs a scatter of per-query figures (A vs B). Plain JS, nothing from the network.
"use strict";
(() => {
  const root = document.getElementById("run-explorer");
  if (!root) return;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = { positive: "#1a9641", junk: "#fdae61", negative: "#d7191c", removed: "#999" };
  const el = (tag, attrs = {}, text) => {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const fmt = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(3));
  async function api(url) {
    const answer = await fetch(url);
    const body = await answer.json();
    if (!answer.ok) throw new Error(body.error || answer.statusText);
    return body;
  }
  // an image (thumbnail URL answering X-Image-Size: WxH of the original) on a canvas with a box
  // in original pixels; the full name on hover
  function boxedImage(url, box, side, name) {
    const canvas = el("canvas", { class: "boxed", title: name, width: side, height: side });
    (async () => {
      const answer = await fetch(url);
      if (!answer.ok) throw new Error((await answer.json()).error || answer.statusText);
      const [w, h] = (answer.headers.get("X-Image-Size") || "").split("x").map(Number);
      const bitmap = await createImageBitmap(await answer.blob());
      const width = w || bitmap.width, height = h || bitmap.height;
      const scale = Math.min(side / width, side / height);
      canvas.width = Math.round(width * scale);
      canvas.height = Math.round(height * scale);
      const ctx = canvas.getContext("2d");
      ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      if (box) {
        ctx.strokeStyle = "#ff1744";
        ctx.lineWidth = 3;
        ctx.strokeRect(box[0] * scale, box[1] * scale, (box[2] - box[0]) * scale, (box[3] - box[1]) * scale);
      }
      canvas.dataset.boxed = box ? "1" : "0";
    })().catch((err) => canvas.replaceWith(el("span", { class: "error", title: name }, `${name}: ${err.message}`)));
    return canvas;
  }
  const gradingOf = (key, gradings) => (key.includes("/") ? key.split("/")[0] : gradings[0]);

  function header(runs) {
    const box = el("div", { class: "run-header" });
    box.append(el("h2", {}, runs.length === 2 ? "Run explorer: run A vs run B" : "Run explorer"));
    runs.forEach((run, i) => {
      const card = el("div", { class: "run-card", id: `run-card-${i}` });
      card.append(el("h3", {}, `${runs.length === 2 ? "ABCD"[i] + ": " : ""}${run.run_dir}`));
      const head = el("p", { class: "headline" });
      head.append(el("strong", {}, `${run.headline_metric} = ${fmt(run.headline_value)}`));
      const chance = run.baselines?.shuffled?.[run.headline_metric];
      const global = run.baselines?.global_descriptor?.[run.headline_metric];
      head.append(` · chance ${fmt(chance)} · one global descriptor ${fmt(global)} · ${run.n_queries} queries · ` +
                  `${run.dataset}, protocol ${run.family}`);
      card.append(head);
      const settings = Object.entries(run.settings).filter(([, v]) => typeof v !== "object")
        .map(([k, v]) => `${k}=${v}`);
      if (run.overrides) settings.unshift(...run.overrides);
      card.append(el("p", { class: "settings" }, settings.join(" · ")));
      const metrics = run.metric_keys.map((k) => `${run.family}/${k} ${fmt(run.metrics[`${run.family}/${k}`])}`);
      card.append(el("p", { class: "metrics" }, metrics.join(" · ")));
      box.append(card);
    });
    return box;
  }

  function results(query, title) {
    const box = el("div", { class: "run-ranking" });
    const key = query.headline;
    const grading = gradingOf(key, query.gradings);
    box.append(el("h4", {}, `${title}query ${query.qid}: ${key} ${fmt(query.values[key])} · ` +
                           `${query.n_relevant[grading]} relevant · ${query.n_ranked} ranked, first ${query.results.length} shown`));
    if (query.image) {
      const q = el("figure", { class: "run-query" });
      const url = `api/run/query-image?qid=${encodeURIComponent(query.qid)}&run=${query.run}&size=320`;
      q.append(boxedImage(url, query.box, 240, query.image));
      q.append(el("figcaption", { title: query.image },
                  `${query.image} · ${query.box ? "box " + query.box.map(Math.round).join(",") : "whole image"}`));
      box.append(q);
    }
    const grid = el("div", { class: "run-grid" });
    query.results.forEach((r, i) => {
      const mark = r.marks[grading];
      const fig = el("figure", { class: `run-result mark-${mark}`, style: `border:4px solid ${COLORS[mark]}` });
      fig.append(boxedImage(`api/images/${encodeURIComponent(r.image)}?size=240`, r.box, 140, r.image));
      fig.append(el("figcaption", { class: "name", title: r.image }, r.image));
      fig.append(el("figcaption", {}, `#${i + 1} ${mark} ${r.score.toFixed(3)}`));
      grid.append(fig);
    });
    box.append(grid);
    return box;
  }

  async function showQuery(qid, runs, detail) {
    detail.replaceChildren(el("p", {}, "loading…"));
    try {
      const parts = await Promise.all(runs.map((_, i) => api(`api/run/queries/${encodeURIComponent(qid)}?run=${i}`)));
      detail.replaceChildren(...parts.map((q, i) => results(q, runs.length === 2 ? `run ${"AB"[i]}: ` : "")));
      detail.classList.toggle("side-by-side", parts.length === 2);
    } catch (err) { detail.replaceChildren(el("p", { class: "error" }, err.message)); }
  }

  async function queryTable(run, runs, detail) {
    const body = await api("api/run/queries");  // the headline, worst first
    const table = el("table", { class: "run-queries" });
    const headRow = el("tr");
    ["query", ...body.metrics, "positives in top"].forEach((h) => headRow.append(el("th", {}, h)));
    table.append(headRow);
    body.queries.forEach((q) => {
      const row = el("tr", { class: "run-query-row", "data-qid": q.qid });
      row.append(el("td", {}, q.qid));
      body.metrics.forEach((k) => row.append(el("td", { class: k === body.headline ? "headline" : "" }, fmt(q.values[k]))));
      const g = gradingOf(body.headline, run.gradings);
      row.append(el("td", {}, `${q.positives_saved[g]} of ${q.n_relevant[g]}`));
      row.addEventListener("click", () => showQuery(q.qid, runs, detail));
      table.append(row);
    });
    const wrap = el("div", { class: "run-table-wrap" });
    wrap.append(el("h3", {}, `Queries by ${body.headline}, worst first (click one)`), table);
    return wrap;
  }

  async function scatter(runs, detail, metric) {
    const box = el("div", { class: "run-scatter", id: "run-scatter" });
    let body;
    try { body = await api(`api/run/compare${metric ? "?metric=" + encodeURIComponent(metric) : ""}`); }
    catch (err) { box.append(el("p", { class: "error" }, err.message)); return box; }
    const select = el("select", { id: "run-metric" });
    body.metrics.forEach((k) => { const o = el("option", { value: k }, k); if (k === body.metric) o.selected = true; select.append(o); });
    select.addEventListener("change", async () => box.replaceWith(await scatter(runs, detail, select.value)));
    const label = el("label", {}, "per-query metric ");
    label.append(select);
    box.append(el("h3", {}, `Per-query ${body.metric}: run A vs run B (${body.n_paired} queries; click a point)`), label);
    const S = 360, P = 40, xy = (v) => P + v * (S - 2 * P);
    const svg = el("svg:svg", { width: S, height: S, viewBox: `0 0 ${S} ${S}` });
    svg.append(el("svg:rect", { x: P, y: P, width: S - 2 * P, height: S - 2 * P, fill: "#fafafa", stroke: "#888" }));
    svg.append(el("svg:line", { x1: xy(0), y1: S - xy(0), x2: xy(1), y2: S - xy(1), stroke: "#bbb", "stroke-dasharray": "4" }));
    for (const t of [0, 0.5, 1]) {
      svg.append(el("svg:text", { x: xy(t), y: S - P + 16, "text-anchor": "middle", "font-size": 11 }, t));
      svg.append(el("svg:text", { x: P - 6, y: S - xy(t) + 4, "text-anchor": "end", "font-size": 11 }, t));
    }
    svg.append(el("svg:text", { x: S / 2, y: S - 6, "text-anchor": "middle", "font-size": 12 }, `run A ${body.metric}`));
    svg.append(el("svg:text", { x: 12, y: S / 2, "font-size": 12, transform: `rotate(-90 12 ${S / 2})`, "text-anchor": "middle" }, `run B ${body.metric}`));
    body.points.filter((p) => p.a !== null && p.b !== null).forEach((p) => {
      const dot = el("svg:circle", { cx: xy(p.a), cy: S - xy(p.b), r: 6, fill: p.b > p.a ? "#2c7bb6" : p.b < p.a ? "#d7191c" : "#666",
                                     "fill-opacity": 0.7, class: "run-point", "data-qid": p.qid });
      dot.append(el("svg:title", {}, `${p.qid}: A ${fmt(p.a)}, B ${fmt(p.b)}`));
      dot.addEventListener("click", () => showQuery(p.qid, runs, detail));
      svg.append(dot);
    });
    box.append(svg);
    return box;
  }

  async function start() {
    let summary;
    try { summary = await api("api/run"); } catch { return; }  // no run dir given: nothing to show
    const runs = summary.runs;
    const detail = el("div", { class: "run-detail", id: "run-detail" });
    root.replaceChildren(header(runs));
    const row = el("div", { class: "run-overview" });
    row.append(await queryTable(runs[0], runs, detail));
    if (runs.length === 2) row.append(await scatter(runs, detail));
    root.append(row, detail);
  }
  start();
})();
