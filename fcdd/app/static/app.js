// The inspection page: uploads, long-polled results, heatmaps drawn from the model's own maps.
// Decisions, masks, opacity and colour scale change here without asking the server again: it sends
// each image's low-resolution map once and the model's alpha table (thresholds from fcdd.calibration).
"use strict";

const $ = (sel) => document.querySelector(sel);
const S = {
  job: null, setup: null, lut: null, refA: null, refB: null, cards: {}, items: new Map(),
  results: {}, scales: {}, counts: {}, selected: null, compareSelected: null, messages: new Set(),
  pollers: {}, uploads: { queued: 0, done: 0 },
};
const fmt = (v, d = 4) => (v === null || v === undefined ? "–" : Number(v).toPrecision(d));

async function api(path, options = {}) {
  const headers = { "x-fcdd-app": "1", ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}
const json = async (path, options) => (await api(path, options)).json();
const post = (path, body) => json(path, { method: "POST", body: JSON.stringify(body),
  headers: { "content-type": "application/json" } });

// ------------------------------------------------------------------ decisions
function alphaRow(ref) {
  const card = S.cards[ref];
  if (!card || !card.alphas.length) return null;
  return card.alphas[Math.min(+$("#alpha").value, card.alphas.length - 1)];
}
function decision(ref, result) {
  if (!result || result.error || result.score === null) return null;
  if (result.p !== null && result.p !== undefined) {
    const row = alphaRow(ref);
    return row && result.p <= row.alpha ? "anomalous" : "nominal";
  }
  const t = $("#threshold").value;
  if (t === "") return null;
  return result.score > +t ? "defect" : "good";
}
const flagged = (d) => d === "anomalous" || d === "defect";
function badge(d) {
  if (!d) return `<span class="badge none">no decision</span>`;
  return `<span class="badge ${flagged(d) ? "bad" : "ok"}">${d.toUpperCase()}</span>`;
}

// ------------------------------------------------------------------ heatmap viewer
class Viewer {
  constructor(el) {
    this.el = el;
    el.innerHTML = `<div class="stack"><img alt=""><canvas class="heat"></canvas>
      <canvas class="outline"></canvas><canvas class="draw"></canvas></div><div class="caption"></div>`;
    [this.img, this.heat, this.outline, this.draw] = el.querySelectorAll("img, canvas");
    this.caption = el.querySelector(".caption");
    this.map = null; this.key = null;
  }
  async show(index, ref) {
    const key = `${index}|${ref}`;
    if (this.key !== key) {
      this.key = key; this.map = null;
      this.el.removeAttribute("data-shown");
      const url = `/api/jobs/${S.job}/items/${index}/`;
      const loaded = new Promise((ok) => { this.img.onload = ok; this.img.onerror = ok; });
      this.img.src = url + "image";
      const response = await api(`${url}map?ref=${encodeURIComponent(ref)}`);
      const [h, w] = response.headers.get("X-Map-Shape").split(",").map(Number);
      const data = new Float32Array(await response.arrayBuffer());
      await loaded;
      if (this.key !== key) return;
      const W = this.img.naturalWidth || w, H = this.img.naturalHeight || h;
      // Fill the panel's width, at most 70 % of the window's height; small images stay crisp.
      this.img.parentElement.style.width = `min(100%, calc(70vh * ${W / H}))`;
      this.img.classList.toggle("small", W < 320);
      this.map = { data, h, w, index, ref };
      this.clearDrawing();
    }
    this.render();
  }
  render() {
    if (!this.map) return;
    const { data, h, w, index, ref } = this.map;
    const result = S.results[ref][index];
    const [low, span, kind] = colourScale(ref, result);
    paintHeat(this.heat, data, h, w, low, span);
    this.heat.style.opacity = +$("#opacity").value / 100;
    const row = alphaRow(ref), d = decision(ref, result);
    const cut = d === "anomalous" ? maskCut(row, result) : null;
    drawOutline(this.outline, data, h, w, cut, this.img.naturalWidth, this.img.naturalHeight);
    const item = S.items.get(index);
    this.caption.innerHTML = `${escape(item.name)} · score ${fmt(result.score)}` +
      (result.p !== null ? ` · p ${fmt(result.p, 3)}` : "") + ` · ${badge(d)}` +
      (cut && cut.note ? ` <span class="note">(mask: ${escape(cut.note)})</span>` : "") +
      `<div class="legend"><span>${fmt(low, 3)}</span><span class="bar"></span>` +
      `<span>${fmt(low + span, 3)}</span> <span class="note">${escape(kind)}</span></div>`;
    this.caption.querySelector(".bar").style.background = gradient();
    this.el.setAttribute("data-shown", String(index));
  }
  clearDrawing() {
    const W = this.img.naturalWidth || 1, H = this.img.naturalHeight || 1;
    const s = Math.min(1, 4096 / Math.max(W, H));
    this.draw.width = Math.max(1, Math.round(W * s)); this.draw.height = Math.max(1, Math.round(H * s));
    this.drawn = false;
  }
  enableDrawing(on) {
    this.draw.classList.toggle("on", on);
    if (this.drawingWired) return;
    this.drawingWired = true;
    let down = false;
    const paint = (e) => {
      if (!down) return;
      const r = this.draw.getBoundingClientRect();
      const x = (e.clientX - r.left) * this.draw.width / r.width;
      const y = (e.clientY - r.top) * this.draw.height / r.height;
      const ctx = this.draw.getContext("2d");
      ctx.fillStyle = "#ff00ff";
      ctx.beginPath();
      ctx.arc(x, y, +$("#brush").value * Math.max(this.draw.width, this.draw.height) / 200, 0, 2 * Math.PI);
      ctx.fill();
      this.drawn = true;
    };
    this.draw.addEventListener("pointerdown", (e) => { down = true; this.draw.setPointerCapture(e.pointerId); paint(e); });
    this.draw.addEventListener("pointermove", paint);
    this.draw.addEventListener("pointerup", () => { down = false; });
  }
  maskDataUrl() {  // the drawing as a 0/255 PNG at the image's own size
    if (!this.drawn) return null;
    const W = this.img.naturalWidth, H = this.img.naturalHeight;
    const out = document.createElement("canvas");
    out.width = W; out.height = H;
    const ctx = out.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.draw, 0, 0, W, H);
    const px = ctx.getImageData(0, 0, W, H);
    for (let k = 0; k < px.data.length; k += 4) {
      const v = px.data[k + 3] > 0 ? 255 : 0;
      px.data[k] = px.data[k + 1] = px.data[k + 2] = v; px.data[k + 3] = 255;
    }
    ctx.putImageData(px, 0, 0);
    return out.toDataURL("image/png");
  }
}

// The colour scale of the select: the model's own (fixed: the same colours as `fcdd predict`'s
// default), the images of this page (shared) or each image by itself; [low, span, description].
function colourScale(ref, result) {
  const card = S.cards[ref], mode = $("#scale").value;
  if (mode === "model" && card && card.scale) return [card.scale[0], card.scale[1], `model scale (${card.scale[2]})`];
  if (mode !== "local" && S.scales[ref]) return [S.scales[ref][0], S.scales[ref][1], "shared by the images here"];
  return [result.local[0], result.local[1], "this image's own scale"];
}
let gradientCss = null;
function gradient() {
  if (!gradientCss) gradientCss = "linear-gradient(to right, " +
    S.lut.filter((_, k) => k % 16 === 0 || k === 255).map((c) => `rgb(${c[0]},${c[1]},${c[2]})`).join(", ") + ")";
  return gradientCss;
}
// fcdd.decisions.mask_rule: pixels above the calibrated pixel threshold where any is; else the
// image's most anomalous region (at or above its own quantile), so a flagged image always has one.
function maskCut(row, result) {
  const t = row ? row.pixel_threshold : null;
  if (t !== null && t !== undefined && result.top > t) return { t, inclusive: false, note: "" };
  if (result.fallback === null || result.fallback === undefined) return null;
  const why = t === null || t === undefined ? "too few calibration images for a pixel threshold at this α"
    : `no pixel above the calibrated pixel threshold ${fmt(t, 3)}`;
  return { t: result.fallback, inclusive: true, note: `${why}: its most anomalous region` };
}

function paintHeat(canvas, data, h, w, low, high) {
  // fcdd.heatmaps: (map - low) / high clipped to [0, 1] (0 for a flat map), then the jet colours.
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let k = 0; k < data.length; k++) {
    let v = high > 0 ? (data[k] - low) / high : 0;
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    const c = S.lut[Math.min(255, Math.floor(v * 256))];
    img.data[4 * k] = c[0]; img.data[4 * k + 1] = c[1]; img.data[4 * k + 2] = c[2]; img.data[4 * k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function drawOutline(canvas, data, h, w, cut, W, H) {
  // The defect mask is (map > t) upscaled nearest to the image: outline the boundary of its cells.
  const s = Math.min(1, 2048 / Math.max(W || 1, H || 1));
  canvas.width = Math.max(1, Math.round((W || w) * s)); canvas.height = Math.max(1, Math.round((H || h) * s));
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!cut) return;
  const sx = canvas.width / w, sy = canvas.height / h, t = cut.t;
  const on = cut.inclusive ? (y, x) => y >= 0 && x >= 0 && y < h && x < w && data[y * w + x] >= t
    : (y, x) => y >= 0 && x >= 0 && y < h && x < w && data[y * w + x] > t;
  ctx.beginPath();
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    if (!on(y, x)) continue;
    if (!on(y - 1, x)) { ctx.moveTo(x * sx, y * sy); ctx.lineTo((x + 1) * sx, y * sy); }
    if (!on(y + 1, x)) { ctx.moveTo(x * sx, (y + 1) * sy); ctx.lineTo((x + 1) * sx, (y + 1) * sy); }
    if (!on(y, x - 1)) { ctx.moveTo(x * sx, y * sy); ctx.lineTo(x * sx, (y + 1) * sy); }
    if (!on(y, x + 1)) { ctx.moveTo((x + 1) * sx, y * sy); ctx.lineTo((x + 1) * sx, (y + 1) * sy); }
  }
  const lw = Math.max(2, canvas.width / 300);
  ctx.strokeStyle = "#000"; ctx.lineWidth = lw + 2; ctx.stroke();
  ctx.strokeStyle = "#fff"; ctx.lineWidth = lw; ctx.stroke();
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ------------------------------------------------------------------ models
function cardLine(card) {
  const auc = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
  const cal = card.calibration_n ? `${card.calibration_n} images` : "none (no p-values: use a score threshold)";
  return `<b>${escape(card.dataset)} · ${escape(card.class)}</b> · ${escape(card.net)} · ${escape(card.backend)}` +
    (card.version ? ` · v${escape(card.version)}` : "") +
    `<br>image AUC ${auc(card.image_auc)} · pixel AUC ${auc(card.pixel_auc)} · calibration ${cal}` +
    (card.data_version ? ` · data ${escape(card.data_version)}` : "");
}
async function loadCard(ref) {
  if (!S.cards[ref]) S.cards[ref] = await json(`/api/model?ref=${encodeURIComponent(ref)}`);
  return S.cards[ref];
}
function fillPicker(select, models, chosen) {
  select.innerHTML = "";
  const groups = { file: "model files", export: "exported models", registry: "registry" };
  for (const [kind, label] of Object.entries(groups)) {
    const list = models.filter((m) => m.kind === kind);
    if (!list.length) continue;
    const g = document.createElement("optgroup");
    g.label = label;
    for (const m of list) g.append(new Option(m.label, m.ref, false, m.ref === chosen));
    select.append(g);
  }
}
async function chooseModel(slot, ref) {
  const key = slot === "A" ? "refA" : "refB";
  S[key] = ref;
  try {
    const [card] = await Promise.all([loadCard(ref), post(`/api/jobs/${S.job}/track`, { ref })]);
    if (slot === "A") { $("#card-a").innerHTML = cardLine(card); setupDecisionControls(card); }
    startPoller(ref);
  } catch (e) { message(`${ref}: ${e.message}`, "error"); }
  renderAll();
}
function setupDecisionControls(card) {
  const model = $("#scale").querySelector('option[value="model"]');
  model.disabled = !card.scale;  // a model without calibration has no scale of its own
  if (!card.scale && $("#scale").value === "model") $("#scale").value = "shared";
  const calibrated = card.alphas.length > 0;
  $("#alpha-box").hidden = !calibrated;
  $("#threshold-box").hidden = calibrated;
  if (!calibrated) return;
  const slider = $("#alpha");
  const current = alphaRow(card.ref);
  slider.max = card.alphas.length - 1;
  const want = current ? current.alpha : S.setup.default_alpha;
  slider.value = Math.max(0, card.alphas.findIndex((r) => r.alpha >= want));
  $("#alpha-out").textContent = card.alphas[+slider.value].alpha;
}

// ------------------------------------------------------------------ results: long polling
function startPoller(ref) {
  if (S.pollers[ref]) return;
  S.results[ref] = S.results[ref] || {};
  const poller = { since: 0, stop: false };
  S.pollers[ref] = poller;
  (async () => {
    while (!poller.stop) {
      try {
        const s = await json(`/api/jobs/${S.job}/status?ref=${encodeURIComponent(ref)}&since=${poller.since}&wait=15`);
        merge(ref, s);
        poller.since = s.stamp;
      } catch (e) {
        message(`lost contact with the server: ${e.message}`, "error");
        await new Promise((ok) => setTimeout(ok, 2000));
      }
    }
  })();
}
function merge(ref, s) {
  for (const it of s.items) {
    S.items.set(it.i, it);
    if (it.error) message(`${it.name}: ${it.error}`, "error");
    else if (it.note) message(`${it.name}: ${it.note}`, "info");
  }
  for (const r of s.results) S.results[ref][r.i] = r;
  for (const m of s.messages) message(m, "error");
  if (s.run_error) message(`${ref}: ${s.run_error}`, "error");
  S.scales[ref] = s.scale; S.counts[ref] = s.counts;
  scheduleRender();
}
let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderAll(); });
}
function message(text, kind) {
  if (S.messages.has(text)) return;
  S.messages.add(text);
  const li = document.createElement("li");
  li.className = kind; li.textContent = text;
  $("#messages").append(li);
  $("#messages-box").hidden = false;
  const errors = $("#messages").querySelectorAll("li.error").length;
  $("#messages-title").textContent = `Messages (${errors} problem${errors === 1 ? "" : "s"}, ` +
    `${S.messages.size - errors} note${S.messages.size - errors === 1 ? "" : "s"})`;
  if (errors) $("#messages-box").open = true;
}

// ------------------------------------------------------------------ rendering
function ordered(ref) {
  const results = S.results[ref] || {};
  return Object.values(results).filter((r) => !r.error && r.score !== null)
    .sort((a, b) => (flagged(decision(ref, b)) - flagged(decision(ref, a))) || (b.score - a.score));
}
function renderAll() {
  if (!S.refA) return;
  renderProgress(); renderGallery(); renderSummary();
  if (S.selected !== null && S.results[S.refA][S.selected]) viewerA.show(S.selected, S.refA).catch(showError);
  if (!$("#compare").hidden) renderCompare();
}
function renderProgress() {
  const c = S.counts[S.refA] || { files: 0, failed: 0, scored: 0, pending: 0 };
  const done = c.scored + c.failed, total = Math.max(c.files, S.uploads.queued);
  $("#progress").max = Math.max(1, total); $("#progress").value = done;
  const uploading = S.uploads.done < S.uploads.queued ? ` · uploading ${S.uploads.done} of ${S.uploads.queued}` : "";
  $("#progress-text").textContent = total ? `Scored ${c.scored} of ${total}` +
    (c.failed ? ` · ${c.failed} failed` : "") + (c.pending ? ` · ${c.pending} waiting` : "") + uploading
    : "No images yet.";
  $("#download").hidden = !c.scored;
  const row = alphaRow(S.refA);
  $("#download").href = `/api/jobs/${S.job}/download?ref=${encodeURIComponent(S.refA)}` + (row ? `&alpha=${row.alpha}` : "");
}
function renderSummary() {
  const list = ordered(S.refA), card = S.cards[S.refA], n = list.length;
  if (!card || !n) { $("#summary").textContent = ""; return; }
  const k = list.filter((r) => flagged(decision(S.refA, r))).length;
  const row = alphaRow(S.refA);
  if (!row) {
    $("#summary").innerHTML = $("#threshold").value === "" ? `${n} images scored; this model has no calibration: ` +
      `set a score threshold to decide.` : `<b>${k} of ${n}</b> above the score threshold ${$("#threshold").value}.`;
    return;
  }
  const far = row.far_bound;
  let text = `<b>${k} of ${n} flagged</b> at α = ${row.alpha} · expected false-alarm rate ` +
    `${(100 * far).toFixed(2)} % of good parts (about ${(far * n).toFixed(1)} of ${n} if all were good)`;
  if (row.warning) text += ` · <span class="warn" id="alpha-warning">${escape(row.warning)}</span>`;
  $("#summary").innerHTML = text;
}
function renderGallery() {
  const gallery = $("#gallery"), ref = S.refA, results = S.results[ref] || {};
  const list = ordered(ref);
  const nodes = [];
  for (const r of list) {
    const id = `thumb-${r.i}`;
    let fig = document.getElementById(id);
    if (!fig || fig.dataset.ref !== ref) {
      fig?.remove();
      fig = document.createElement("figure");
      fig.className = "thumb"; fig.id = id; fig.dataset.ref = ref; fig.dataset.index = r.i;
      fig.innerHTML = `<img loading="lazy" alt="" src="/api/jobs/${S.job}/items/${r.i}/thumb?ref=${encodeURIComponent(ref)}"><figcaption></figcaption>`;
      fig.onclick = () => select(r.i);
    }
    const d = decision(ref, results[r.i]), item = S.items.get(r.i) || { name: "?" };
    fig.classList.toggle("flagged", flagged(d));
    fig.classList.toggle("selected", S.selected === r.i);
    fig.querySelector("figcaption").innerHTML = `<span class="name" title="${escape(item.name)}">${escape(item.name)}</span>` +
      `score ${fmt(r.score)}${r.p !== null ? ` · p ${fmt(r.p, 2)}` : ""}<br>${badge(d)}${item.note ? ' <span class="note">(' + escape(item.note.split(":")[0]) + ")</span>" : ""}`;
    nodes.push(fig);
  }
  for (const el of [...gallery.children]) if (!nodes.includes(el)) el.remove();
  nodes.forEach((fig, k) => { if (gallery.children[k] !== fig) gallery.insertBefore(fig, gallery.children[k] || null); });
  if (S.selected === null && list.length) select(list[0].i);
}
function select(index) {
  S.selected = index;
  $("#detail").hidden = false;
  document.querySelectorAll("figure.thumb.selected").forEach((f) => f.classList.remove("selected"));
  document.getElementById(`thumb-${index}`)?.classList.add("selected");
  $("#feedback-status").textContent = "A missed defect can carry a mask: draw it on the image or give a file.";
  S.maskFile = null;
  viewerA.show(index, S.refA).then(renderFacts).catch(showError);
}
function renderFacts() {
  const r = S.results[S.refA][S.selected], item = S.items.get(S.selected), d = decision(S.refA, r);
  const rows = [["image", escape(item.name)], ["size", item.size ? `${item.size[1]} × ${item.size[0]} px` : "–"],
    ["score", fmt(r.score, 5)]];
  if (r.p !== null) rows.push(["p-value", fmt(r.p, 4)], ["normalised score", fmt(1 - r.p, 4)]);
  rows.push(["decision", badge(d)]);
  if (item.note) rows.push(["read as", escape(item.note)]);
  $("#facts").innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
}
const showError = (e) => message(e.message, "error");

// ------------------------------------------------------------------ compare
function renderCompare() {
  const A = S.refA, B = S.refB, body = $("#cards tbody");
  const cards = [S.cards[A], B ? S.cards[B] : null];
  const rowsDef = [["model", (c) => escape(c.ref)], ["version", (c) => c.version || "–"],
    ["dataset · class", (c) => `${escape(c.dataset)} · ${escape(c.class)}`], ["net", (c) => escape(c.net)],
    ["image AUC", (c) => fmt(c.image_auc, 3)], ["pixel AUC", (c) => fmt(c.pixel_auc, 3)],
    ["calibration n", (c) => c.calibration_n || "none"], ["data version", (c) => escape(c.data_version || "–")],
    ["runs on", (c) => escape(c.backend)]];
  body.innerHTML = `<tr><th></th><th>A</th><th>B</th></tr>` + rowsDef.map(([name, f]) =>
    `<tr><th>${name}</th>${cards.map((c) => `<td>${c ? f(c) : "choose a model"}</td>`).join("")}</tr>`).join("");
  if (!B) return;
  const listA = ordered(A), resB = S.results[B] || {};
  let fa = 0, fb = 0, dis = 0, both = 0;
  const rows = listA.map((r) => {
    const rb = resB[r.i], da = decision(A, r), db = rb ? decision(B, rb) : null;
    if (rb) { both++; fa += flagged(da); fb += flagged(db); dis += flagged(da) !== flagged(db); }
    const cell = (ref, res, d) => res ? `<img alt="" src="/api/jobs/${S.job}/items/${res.i}/thumb?ref=${encodeURIComponent(ref)}">` +
      `score ${fmt(res.score)}${res.p !== null ? `<br>p ${fmt(res.p, 3)}` : ""}<br>${badge(d)}` : "scoring…";
    const item = S.items.get(r.i) || { name: "?" };
    return `<tr data-index="${r.i}" class="${rb && flagged(da) !== flagged(db) ? "disagree" : ""}${S.compareSelected === r.i ? " selected" : ""}">` +
      `<td>${escape(item.name)}</td><td class="a">${cell(A, r, da)}</td><td class="b">${cell(B, rb, db)}</td></tr>`;
  });
  $("#compare-table tbody").innerHTML = rows.join("");
  $("#compare-summary").innerHTML = `${both} of ${listA.length} images scored by both · A flags ${fa}, ` +
    `B flags ${fb} · they disagree on <b>${dis}</b>`;
  if (S.compareSelected === null && listA.length && resB[listA[0].i]) S.compareSelected = listA[0].i;
  const k = S.compareSelected;
  if (k !== null && resB[k]) {
    viewerCA.show(k, A).catch(showError);
    viewerCB.show(k, B).catch(showError);
  }
}

// ------------------------------------------------------------------ uploads
async function upload(files) {
  files = [...files];
  if (!files.length) return;
  S.uploads.queued += files.length;
  renderProgress();
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const f = files[next++];
      const name = f.webkitRelativePath || f.name;
      try {
        await api(`/api/jobs/${S.job}/files?name=${encodeURIComponent(name)}`, { method: "PUT", body: f });
      } catch (e) { message(`${name}: ${e.message}`, "error"); }
      S.uploads.done++;
      scheduleRender();
    }
  };
  await Promise.all([worker(), worker(), worker()]);
}

async function sendVerdict(verdict) {
  if (S.selected === null) return;
  const mask = verdict === "missed_defect" ? (S.maskFile || viewerA.maskDataUrl()) : null;
  const row = alphaRow(S.refA);
  $("#feedback-status").textContent = "saving…";
  try {
    const r = await post("/api/feedback", { job: S.job, i: S.selected, ref: S.refA, verdict, mask,
      alpha: row ? row.alpha : "", decision: decision(S.refA, S.results[S.refA][S.selected]) || "" });
    $("#feedback-status").innerHTML = `<span class="ok-text">Saved ${verdict.replace("_", " ")}: ` +
      `${escape(r.image)}${r.mask ? " + " + escape(r.mask) : ""} (labels.csv: ${r.row} verdicts)</span>` +
      (r.replaced.length ? ` · replaced ${escape(r.replaced.join(", "))}` : "");
  } catch (e) { $("#feedback-status").innerHTML = `<span class="warn">${escape(e.message)}</span>`; }
}

// ------------------------------------------------------------------ wiring
const viewerA = new Viewer($("#viewer-a")), viewerCA = new Viewer($("#viewer-ca")), viewerCB = new Viewer($("#viewer-cb"));
function wire() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files); });
  $("#files").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });
  $("#folder").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });
  $("#server-folder").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await post(`/api/jobs/${S.job}/folder`, { path: e.target.path.value });
      message(`${e.target.path.value}: ${r.added} of ${r.found} images added`, "info");
    } catch (err) { message(err.message, "error"); }
  });
  $("#alpha").addEventListener("input", () => {
    const row = alphaRow(S.refA);
    $("#alpha-out").textContent = row ? row.alpha : "";
    renderAll(); [viewerA, viewerCA, viewerCB].forEach((v) => v.render());
  });
  $("#threshold").addEventListener("input", () => { renderAll(); viewerA.render(); });
  $("#opacity").addEventListener("input", () => {
    $("#opacity-out").textContent = (+$("#opacity").value / 100).toFixed(2);
    [viewerA, viewerCA, viewerCB].forEach((v) => { v.heat.style.opacity = +$("#opacity").value / 100; });
  });
  $("#scale").addEventListener("change", () => [viewerA, viewerCA, viewerCB].forEach((v) => v.render()));
  $("#model-a").addEventListener("change", (e) => { S.selected = null; $("#gallery").innerHTML = ""; chooseModel("A", e.target.value); });
  $("#model-b").addEventListener("change", (e) => chooseModel("B", e.target.value));
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
    $("#inspect").hidden = b.dataset.tab !== "inspect";
    $("#compare").hidden = b.dataset.tab !== "compare";
    renderAll();
  }));
  $("#compare-table").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-index]");
    if (tr) { S.compareSelected = +tr.dataset.index; renderCompare(); }
  });
  $("#false-alarm").addEventListener("click", () => sendVerdict("false_alarm"));
  $("#missed-defect").addEventListener("click", () => sendVerdict("missed_defect"));
  $("#draw").addEventListener("click", (e) => {
    const on = e.target.getAttribute("aria-pressed") !== "true";
    e.target.setAttribute("aria-pressed", String(on));
    viewerA.enableDrawing(on);
  });
  $("#clear-mask").addEventListener("click", () => { viewerA.clearDrawing(); S.maskFile = null; });
  $("#mask-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (!f) return;
    const reader = new FileReader();
    reader.onload = () => { S.maskFile = reader.result; $("#feedback-status").textContent = `mask file: ${f.name}`; };
    reader.readAsDataURL(f);
    e.target.value = "";
  });
}

async function start() {
  wire();
  try {
    // Independent requests in parallel: the page is ready one round trip sooner.
    const [setup, job] = await Promise.all([json("/api/setup"), post("/api/jobs", {})]);
    S.setup = setup; S.job = job.job;
    S.lut = S.setup.colormap;
    const cat = S.setup.catalog;
    $("#labels-path").textContent = S.setup.labels;
    $("#server-folder").hidden = !S.setup.images_root;
    if (cat.registry && cat.registry.note) $("#registry-note").textContent = cat.registry.note;
    const first = cat.models.length ? cat.models[0].ref : null;
    fillPicker($("#model-a"), cat.models, first);
    fillPicker($("#model-b"), cat.models, null);
    $("#model-b").prepend(new Option("choose a model…", "", true, true));
    $("#model-b").value = "";
    if (first) await chooseModel("A", first);
    else message("no models to choose from: start fcdd app with a MODEL, --models-root or a registry", "error");
    document.body.setAttribute("data-ready", "1");
  } catch (e) { message(`cannot start: ${e.message}`, "error"); }
}
start();
