// claid serve page: query by database image / upload (+ a box drawn with the mouse) or text,
// results with their localising boxes, region hierarchies. Plain JS, nothing from the network.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { query: null, box: null, drag: null, hier: null };
const THUMB = 512;

async function api(url, options) {
  const answer = await fetch(url, options);
  const body = answer.headers.get("content-type")?.includes("json") ? await answer.json() : null;
  if (!answer.ok) throw new Error(body?.error || `${answer.status} ${answer.statusText}`);
  return body;
}
const imageUrl = (index, size) => `api/images/${index}?size=${size}`;

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${src}`));
    img.src = src;
  });
}

// draw an image on a canvas, fitted into (maxW, maxH); returns pixels-per-original-pixel
function drawFitted(canvas, img, width, height, maxW, maxH) {
  const scale = Math.min(maxW / width, maxH / height);
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  return scale;
}

function strokeBox(ctx, box, scale, color, width) {
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.strokeRect(box[0] * scale, box[1] * scale, (box[2] - box[0]) * scale, (box[3] - box[1]) * scale);
}

// ---- the query image and its box

async function setQuery(query) {
  state.query = query;
  state.box = null;
  query.img = await loadImage(query.src);
  if (!query.width) { query.width = query.img.naturalWidth; query.height = query.img.naturalHeight; }
  $("query-name").textContent = query.label;
  drawQuery();
}

function drawQuery() {
  const q = state.query;
  if (!q || !q.img) return;  // still loading
  const canvas = $("query-canvas");
  q.scale = drawFitted(canvas, q.img, q.width, q.height, 480, 360);
  const box = state.drag ? dragBox() : state.box;
  if (box) strokeBox(canvas.getContext("2d"), box, q.scale, "#ff1744", 3);
  $("box-text").textContent = state.box ? `box [${state.box.join(", ")}] (original pixels)` : "whole image";
  document.dispatchEvent(new CustomEvent("claid:query"));
}

function canvasPoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width,
          (event.clientY - rect.top) * canvas.height / rect.height];
}

// the dragged rectangle in original pixels, clamped into the image, end exclusive
function dragBox() {
  const q = state.query, [a, b] = [state.drag.from, state.drag.to];
  const clamp = (v, most) => Math.max(0, Math.min(most, Math.round(v / q.scale)));
  return [clamp(Math.min(a[0], b[0]), q.width), clamp(Math.min(a[1], b[1]), q.height),
          clamp(Math.max(a[0], b[0]), q.width), clamp(Math.max(a[1], b[1]), q.height)];
}

function wireQueryCanvas() {
  const canvas = $("query-canvas");
  canvas.addEventListener("mousedown", (e) => {
    if (!state.query) return;
    state.drag = { from: canvasPoint(canvas, e), to: canvasPoint(canvas, e) };
  });
  canvas.addEventListener("mousemove", (e) => {
    if (state.drag) { state.drag.to = canvasPoint(canvas, e); drawQuery(); }
  });
  window.addEventListener("mouseup", () => {
    if (!state.drag) return;
    const box = dragBox();
    state.drag = null;
    state.box = box[2] - box[0] >= 2 && box[3] - box[1] >= 2 ? box : null;
    drawQuery();
  });
  $("clear-box").addEventListener("click", () => { state.box = null; drawQuery(); });
}

// ---- search

async function search(body) {
  const top = parseInt($("top").value, 10) || 12;
  $("status").textContent = "searching…";
  try {
    let answer;
    if (body instanceof FormData) {
      body.set("top", String(top));
      answer = await api("api/search", { method: "POST", body });
    } else {
      answer = await api("api/search", { method: "POST", headers: { "content-type": "application/json" },
                                         body: JSON.stringify({ ...body, top }) });
    }
    $("status").textContent = "";
    showResults(answer);
  } catch (err) {
    $("status").textContent = err.message;
  }
}

function searchQuery() {
  const q = state.query;
  if (!q) { $("status").textContent = "pick a query image first"; return; }
  if (q.file) {
    const form = new FormData();
    form.set("image", q.file);
    if (state.box) form.set("box", JSON.stringify(state.box));
    return search(form);
  }
  return search({ image_id: q.index, box: state.box });
}

function showResults(answer) {
  const grid = $("result-grid");
  grid.textContent = "";
  const forward = answer.forward_ms == null ? (answer.cached ? "cached query vector" : "no forward")
                                            : `forward ${answer.forward_ms.toFixed(0)} ms`;
  $("results-info").textContent = `${answer.results.length} images · ${answer.took_ms.toFixed(1)} ms (${forward})`;
  for (const r of answer.results) {
    const card = document.createElement("div");
    card.className = "card result";
    card.dataset.image = r.image_index;
    const canvas = document.createElement("canvas");
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = `<b>#${r.rank}</b><span>score ${r.score.toFixed(3)}</span>`;
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = r.image_id;
    id.title = r.image_id;
    card.append(canvas, meta, id);
    grid.append(card);
    card.addEventListener("click", () => showHierarchy(r.image_index, r.region_id));
    drawResult(canvas, r);
  }
  document.dispatchEvent(new CustomEvent("claid:results"));
}

async function drawResult(canvas, r) {
  const img = await loadImage(imageUrl(r.image_index, 256));
  const size = sizes[r.image_index] || [img.naturalWidth, img.naturalHeight];
  const scale = drawFitted(canvas, img, size[0], size[1], 200, 150);
  strokeBox(canvas.getContext("2d"), r.box, scale, "#ff1744", 3);
  canvas.dataset.boxed = "1";
}

// ---- hierarchy

async function showHierarchy(index, matched) {
  $("hierarchy").hidden = false;
  try {
    const [tree, img] = await Promise.all([api(`api/images/${index}/regions`), loadImage(imageUrl(index, THUMB))]);
    state.hier = { tree, img, matched };
    const depths = tree.regions.map((r) => r.depth);
    const slider = $("depth");
    slider.max = Math.max(1, ...depths);
    const hit = tree.regions.find((r) => r.region_id === matched);
    slider.value = hit ? hit.depth : 1;
    $("hier-name").textContent = `${tree.image_id} · ${tree.regions.length} regions`;
    drawHierarchy();
  } catch (err) {
    $("hier-name").textContent = err.message;
  }
}

const PALETTE = ["#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#fdd835", "#6d4c41", "#3949ab"];

function drawHierarchy() {
  const h = state.hier;
  if (!h) return;
  const { tree, img } = h, canvas = $("hier-canvas"), ctx = canvas.getContext("2d");
  const scale = drawFitted(canvas, img, tree.width, tree.height, 480, 360);
  h.scale = scale;
  const depth = parseInt($("depth").value, 10);
  const shown = visibleRegions(depth);
  $("depth-text").textContent = `depth ${depth}: ${shown.length} regions`;
  shown.forEach((r, i) => {
    const color = PALETTE[i % PALETTE.length];
    if ($("show-masks").checked && r.mask && tree.grid && tree.cell) drawMask(ctx, r.mask, tree, scale, color);
    strokeBox(ctx, r.box, scale, color, 2);
  });
  const hit = tree.regions.find((r) => r.region_id === h.matched);
  if (hit) {
    if (r_visible(hit, shown) && $("show-masks").checked && hit.mask) drawMask(ctx, hit.mask, tree, scale, "#ff1744");
    strokeBox(ctx, hit.box, scale, "#ff1744", 4);
  }
}
const r_visible = (hit, shown) => shown.includes(hit);

function visibleRegions(depth) {
  const all = $("all-depths").checked;
  return state.hier.tree.regions.filter((r) => (all ? r.depth <= depth : r.depth === depth));
}

// a patch-level mask (row-major run lengths, first run = outside) filled translucent
function drawMask(ctx, runs, tree, scale, color) {
  const [gh, gw] = tree.grid, [cy, cx] = tree.cell;
  ctx.fillStyle = color + "55";
  let at = 0;
  runs.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let p = at; p < at + run; p++) {
        const y = Math.floor(p / gw), x = p % gw;
        if (y < gh) ctx.fillRect(x * cx * scale, y * cy * scale, Math.ceil(cx * scale), Math.ceil(cy * scale));
      }
    }
    at += run;
  });
}

function wireHierarchy() {
  for (const id of ["depth", "show-masks", "all-depths"]) $(id).addEventListener("input", drawHierarchy);
  $("hier-canvas").addEventListener("click", (e) => {
    const h = state.hier;
    if (!h) return;
    const [x, y] = canvasPoint($("hier-canvas"), e).map((v) => v / h.scale);
    const inside = visibleRegions(parseInt($("depth").value, 10))
      .filter((r) => r.box[0] <= x && x < r.box[2] && r.box[1] <= y && y < r.box[3])
      .sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
    if (inside.length) { h.matched = inside[0].region_id; drawHierarchy(); search({ region_id: inside[0].region_id }); }
  });
}

// ---- database images

const sizes = {};

const PAGE = 60;
const db = { offset: 0, filter: "" };

// one page of the database images (any number: the server pages and filters by name)
async function loadDatabase() {
  const query = `offset=${db.offset}&limit=${PAGE}` + (db.filter ? `&q=${encodeURIComponent(db.filter)}` : "");
  const listing = await api(`api/images?${query}`);
  const grid = $("db-grid");
  grid.replaceChildren();
  for (const item of listing.images) {
    if (item.width) sizes[item.index] = [item.width, item.height];
    const card = document.createElement("div");
    card.className = "card db";
    card.dataset.image = item.index;
    card.title = item.id;
    const img = document.createElement("img");
    img.src = imageUrl(item.index, 128);
    img.style.width = "110px";
    img.loading = "lazy";
    const row = document.createElement("div");
    row.className = "meta";
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = item.id;
    id.title = item.id;
    const tree = document.createElement("button");
    tree.textContent = "regions";
    tree.title = "show its region hierarchy";
    tree.addEventListener("click", (e) => { e.stopPropagation(); showHierarchy(item.index, null); });
    row.append(id, tree);
    card.append(img, row);
    card.addEventListener("click", () => {
      document.querySelectorAll(".db.chosen").forEach((c) => c.classList.remove("chosen"));
      card.classList.add("chosen");
      const [width, height] = sizes[item.index] || [];
      setQuery({ index: item.index, label: item.id, src: imageUrl(item.index, THUMB), width, height });
    });
    grid.append(card);
  }
  const last = db.offset + listing.images.length;
  $("db-page").textContent = listing.total
    ? `${db.offset + 1}–${last} of ${listing.total}` + (db.filter ? ` matching (${listing.all} in all)` : "")
    : `no image name holds "${db.filter}"`;
  $("db-prev").disabled = db.offset === 0;
  $("db-next").disabled = last >= listing.total;
}

function wireDatabase() {
  let typing;
  $("db-filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { db.filter = $("db-filter").value.trim(); db.offset = 0; loadDatabase(); }, 250);
  });
  $("db-prev").addEventListener("click", () => { db.offset = Math.max(0, db.offset - PAGE); loadDatabase(); });
  $("db-next").addEventListener("click", () => { db.offset += PAGE; loadDatabase(); });
}

async function start() {
  wireQueryCanvas();
  wireHierarchy();
  wireDatabase();
  $("search").addEventListener("click", searchQuery);
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) setQuery({ file, label: `upload: ${file.name}`, src: URL.createObjectURL(file) });
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search({ text: $("text").value });
  });
  const health = await api("api/health");
  $("index-info").textContent = `${health.images} images · ${health.regions} regions · ${health.descriptor}` +
    (health.text ? " · text queries" : "");
  $("text-form").hidden = !health.text;
  await loadDatabase();
}
start().catch((err) => { $("status").textContent = err.message; });
