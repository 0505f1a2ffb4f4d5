// claid serve query-set editor (claid serve --queries FILE): the query drawn above (a database
// image or an upload, and its box), positives and junk marked from the results or by name, saved
// as one line of the collection's queries.jsonl. Plain JS, nothing from the network.
"use strict";
(() => {
  const root = document.getElementById("editor");
  if (!root) return;
  const ed = { positives: [], junk: [], editing: null, upload: null };

  async function call(url, options) {
    const answer = await fetch(url, options);
    const body = await answer.json();
    if (!answer.ok) throw new Error(body.error || answer.statusText);
    return body;
  }
  const jsonPost = (url, body, method = "POST") =>
    call(url, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const say = (text) => { $("ed-status").textContent = text; };

  function renderMarks() {
    for (const kind of ["positives", "junk"]) {
      const box = $(`ed-${kind}`);
      box.replaceChildren();
      ed[kind].forEach((id) => {
        const chip = document.createElement("span");
        chip.className = `chip ${kind}`;
        chip.textContent = id;
        chip.title = id;
        const drop = document.createElement("button");
        drop.textContent = "×";
        drop.addEventListener("click", () => { ed[kind] = ed[kind].filter((x) => x !== id); renderMarks(); });
        chip.append(drop);
        box.append(chip);
      });
      if (!ed[kind].length) box.textContent = "none";
    }
  }

  function mark(kind, id) {
    const other = kind === "positives" ? "junk" : "positives";
    ed[other] = ed[other].filter((x) => x !== id);
    if (!ed[kind].includes(id)) ed[kind].push(id);
    renderMarks();
  }

  function showCurrent() {
    const q = state.query;
    if (!q) return;
    const box = state.box ? `box [${state.box.join(", ")}]` : "the whole image";
    $("ed-current").textContent = `query: ${q.label} · ${box}` +
      (q.file ? "" : " · this database image leaves the database for every query once saved");
  }

  async function byName(kind) {
    const name = $("ed-name").value.trim();
    if (!name) return;
    try {
      const found = await call(`api/images?limit=20&q=${encodeURIComponent(name)}`);
      const exact = found.images.find((i) => i.id === name);
      if (exact || found.total === 1) { mark(kind, (exact || found.images[0]).id); $("ed-name").value = ""; say(""); }
      else say(found.total ? `${found.total} images hold "${name}": type more of the name` : `no image holds "${name}"`);
    } catch (err) { say(err.message); }
  }

  async function save() {
    const q = state.query;
    if (!q && !ed.upload) { say("pick a query image first"); return; }
    const body = { box: state.box, positives: ed.positives, junk: ed.junk };
    const qid = $("ed-qid").value.trim();
    if (qid) body.qid = qid;
    try {
      if (ed.upload && (!q || q.fromEntry)) {
        body.upload = ed.upload;  // editing a query whose image was uploaded: keep it
      } else if (q.file) {
        const form = new FormData();
        form.set("image", q.file);
        body.upload = (await call("api/queries/upload", { method: "POST", body: form })).upload;
      } else {
        body.image_id = q.index;
      }
      const saved = ed.editing
        ? await jsonPost(`api/queries/${encodeURIComponent(ed.editing)}`, body, "PUT")
        : await jsonPost("api/queries", body);
      say(ed.editing ? `saved query ${ed.editing} (the previous file kept as .bak)` : `saved query ${saved.qid}`);
      stopEditing();
      await refresh();
    } catch (err) { say(err.message); }
  }

  function stopEditing() {
    ed.positives = []; ed.junk = []; ed.editing = null; ed.upload = null;
    $("ed-qid").value = "";
    $("ed-save").textContent = "save query";
    renderMarks();
  }

  async function edit(entry) {
    ed.editing = entry.qid;
    ed.positives = [...entry.positives];
    ed.junk = [...entry.junk];
    ed.upload = null;
    $("ed-qid").value = entry.qid;
    $("ed-save").textContent = `save ${entry.qid}`;
    renderMarks();
    const found = await call(`api/images?limit=50&q=${encodeURIComponent(entry.image)}`);
    const item = found.images.find((i) => i.id === entry.image);
    if (item) {
      await setQuery({ index: item.index, label: item.id, src: imageUrl(item.index, THUMB),
                       width: item.width, height: item.height });
    } else {  // an uploaded photo (queries/<hash>): kept unless another query image is picked
      ed.upload = "queries/" + entry.image.split("/").pop();
      await setQuery({ label: `${entry.image} (uploaded)`, src: URL.createObjectURL(
        await (await fetch(`api/queries/image?name=${encodeURIComponent(ed.upload)}`)).blob()), fromEntry: true });
    }
    state.query.fromEntry = true;
    state.box = entry.box ? entry.box.map(Math.round) : null;
    drawQuery();
    say(`editing ${entry.qid}`);
  }

  async function refresh() {
    const listing = await call("api/queries");
    $("ed-file").textContent = listing.file;
    $("ed-note").textContent = `Each saved query is one line of this file. Note: ${listing.note}.`;
    $("ed-command").textContent = listing.command;
    const table = $("ed-saved");
    table.replaceChildren();
    const head = table.insertRow();
    for (const h of ["qid", "image", "box", "positives", "junk", "", ""]) head.insertCell().textContent = h;
    for (const entry of listing.queries) {
      const row = table.insertRow();
      row.dataset.qid = entry.qid;
      row.insertCell().textContent = entry.qid;
      const image = row.insertCell();
      image.textContent = entry.image;
      image.title = entry.image;
      row.insertCell().textContent = entry.box ? entry.box.map(Math.round).join(", ") : "whole";
      row.insertCell().textContent = entry.positives.length;
      row.insertCell().textContent = entry.junk.length;
      const change = document.createElement("button");
      change.textContent = "edit";
      change.className = "edit";
      change.addEventListener("click", () => edit(entry).catch((err) => say(err.message)));
      row.insertCell().append(change);
      const drop = document.createElement("button");
      drop.textContent = "delete";
      drop.addEventListener("click", async () => {
        try { await call(`api/queries/${encodeURIComponent(entry.qid)}`, { method: "DELETE" }); await refresh(); }
        catch (err) { say(err.message); }
      });
      row.insertCell().append(drop);
    }
    $("ed-problems").replaceChildren(...listing.problems.map((p) => {
      const item = document.createElement("li");
      item.textContent = p.error;
      return item;
    }));
  }

  // every result card gets "+ positive" / "+ junk"
  document.addEventListener("claid:results", () => {
    if (root.hidden) return;
    document.querySelectorAll("#result-grid .card.result").forEach((card) => {
      const id = card.querySelector(".id").title;
      const row = document.createElement("div");
      row.className = "marks";
      for (const [kind, text] of [["positives", "+ positive"], ["junk", "+ junk"]]) {
        const button = document.createElement("button");
        button.className = `mark-${kind}`;
        button.textContent = text;
        button.addEventListener("click", (e) => { e.stopPropagation(); mark(kind, id); });
        row.append(button);
      }
      card.append(row);
    });
  });
  document.addEventListener("claid:query", showCurrent);

  (async () => {
    const health = await call("api/health");
    if (!health.queries_file) return;
    root.hidden = false;
    $("ed-add-positive").addEventListener("click", () => byName("positives"));
    $("ed-add-junk").addEventListener("click", () => byName("junk"));
    $("ed-save").addEventListener("click", save);
    renderMarks();
    await refresh();
  })().catch((err) => say(err.message));
})();
