// The logitlens page: the exploration loop over the server's API (see logitlens/web/app.py).
// Plain browser JavaScript, no build step; plotly.js comes from /static/plotly.min.js (the installed
// plotly package). The server renders every figure (logitlens.views): this file only asks, draws and
// keeps the state (model, lens, prompt, statistic, targets, pinned cell) in the URL.
"use strict";

const $ = (id) => document.getElementById(id);
const PLOT = { displaylogo: false, responsive: false };
const state = {
  model: null, lens: "logit", subblocks: false, stat: "top_probs", target: 0, prompt: 0,
  prompts: [], targets: "", answer: "", file: null, pin: null, result: null, view: null, models: [],
};
window.logitlens = state; // for the browser test and the curious

// ---- the API ----------------------------------------------------------------------------------------
async function api(path, options = {}) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${detail}`);
  }
  return r;
}
const postJSON = (path, body) =>
  api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// ---- targets, concepts and answers from the boxes ----------------------------------------------------
// Items are separated by ";". "Paris" tracks the word-initial token " Paris"; "exact" in quotes is taken
// as written; "fr=Paris,Londres" (or "Paris,Parigi") is a concept: the summed mass of its words' tokens.
function word(text) {
  const t = text.trim();
  const quoted = t.match(/^"(.*)"$/s);
  return quoted ? quoted[1] : " " + t;
}
function parseTargets(text) {
  const targets = [], concepts = {};
  for (const raw of text.split(/[;\n]/)) {
    const item = raw.trim();
    if (!item) continue;
    const eq = item.indexOf("=");
    if (eq > 0 && !item.slice(0, eq).includes(",")) {
      concepts[item.slice(0, eq).trim()] = item.slice(eq + 1).split(",").map((w) => w.trim()).filter(Boolean);
    } else if (item.includes(",") && !/^".*"$/s.test(item)) {
      concepts[item] = item.split(",").map((w) => w.trim()).filter(Boolean);
    } else {
      targets.push(word(item));
    }
  }
  return { targets, concepts };
}

// ---- the URL -----------------------------------------------------------------------------------------
function saveURL() {
  const q = new URLSearchParams();
  const put = (k, v) => { if (v !== null && v !== "" && v !== undefined) q.set(k, v); };
  put("model", state.model); put("lens", state.lens !== "logit" ? state.lens : null);
  put("sub", state.subblocks ? "1" : null); put("stat", state.stat !== "top_probs" ? state.stat : null);
  put("target", state.target ? String(state.target) : null); put("p", state.prompt ? String(state.prompt) : null);
  put("targets", state.targets); put("answer", state.answer); put("file", state.file);
  if (!state.file) state.prompts.forEach((p) => q.append("prompt", p));
  if (state.pin) put("pin", `${state.pin.row},${state.pin.column}`);
  history.replaceState(null, "", "?" + q.toString());
}
function loadURL() {
  const q = new URLSearchParams(location.search);
  state.model = q.get("model"); state.lens = q.get("lens") || "logit"; state.subblocks = q.get("sub") === "1";
  state.stat = q.get("stat") || "top_probs"; state.target = Number(q.get("target") || 0);
  state.prompt = Number(q.get("p") || 0); state.targets = q.get("targets") || ""; state.answer = q.get("answer") || "";
  state.file = q.get("file"); state.prompts = q.getAll("prompt");
  const pin = (q.get("pin") || "").split(",").map(Number);
  state.pin = pin.length === 2 && pin.every(Number.isFinite) ? { row: pin[0], column: pin[1] } : null;
}

// ---- controls ----------------------------------------------------------------------------------------
function options(select, items, value) {
  select.replaceChildren(...items.map(([v, label]) => new Option(label, v, false, v === value)));
}
function fillLenses() {
  const m = state.models.find((x) => x.name === state.model);
  const lenses = m ? m.lenses : ["logit"];
  if (!lenses.includes(state.lens)) state.lens = "logit";
  options($("lens"), lenses.map((l) => [l, l]), state.lens);
  $("subblocks").disabled = !(m && m.subblocks);
  const others = [];
  for (const x of state.models) for (const l of x.lenses) {
    if (x.name !== state.model || l !== state.lens) others.push([`${x.name}|${l}`, `${x.name} · ${l} lens`]);
  }
  others.push(["prompt", "another prompt"]);
  options($("compare-with"), others, others[0][0]);
}
async function loadModels() {
  const info = await (await api("/api/models")).json();
  state.models = info.models;
  if (!state.models.some((m) => m.name === state.model)) state.model = state.models.length ? state.models[0].name : null;
  options($("model"), state.models.map((m) => [m.name, `${m.name} (${m.n_layers} blocks)`]), state.model);
  $("model").disabled = $("prompt").disabled = $("run").disabled = !state.models.length;
  for (const f of info.files) $("files").add(new Option(`${f.name} (${f.n_prompts} prompts)`, f.id));
  fillLenses();
}

// ---- running and viewing -----------------------------------------------------------------------------
function runBody(prompts, model, lens) {
  const { targets, concepts } = parseTargets(state.targets);
  const answers = state.answer.trim() ? prompts.map(() => word(state.answer)) : null;
  return { prompts, model, lens, targets, concepts, answers, subblocks: state.subblocks && !$("subblocks").disabled };
}
async function runPrompts(keepPin = false) {
  const prompts = $("prompt").value.split("\n").filter((p) => p.trim());
  if (!prompts.length) return status("type a prompt first", true);
  const started = performance.now();
  state.prompts = prompts; state.file = null; state.targets = $("targets").value; state.answer = $("answer").value;
  if (!keepPin) state.pin = null;
  if (state.prompt >= prompts.length) state.prompt = 0;
  status("running…");
  try {
    const r = await postJSON("/api/run", runBody(prompts, state.model, state.lens));
    state.result = r.headers.get("x-result-id");
    await showView();
    state.lastViewMs = performance.now() - started;
    status(`first view in ${Math.round(state.lastViewMs)} ms`);
  } catch (e) { status(e.message, true); }
}
function statValue(stat, target) { return `${stat}:${target === null ? 0 : target}`; }
async function showView() {
  const q = new URLSearchParams({ prompt: state.prompt, stat: state.stat, target: state.target });
  let v;
  try {
    v = await (await api(`/api/results/${state.result}/view?${q}`)).json();
  } catch (e) {
    if (state.stat === "top_probs") throw e;
    state.stat = "top_probs"; state.target = 0; // a statistic this result has not: back to the default
    return showView();
  }
  state.view = v;
  options($("stat"), v.menu.map((m) => [statValue(m.stat, m.target), m.label]), statValue(v.stat, v.target));
  options($("picker"), v.prompts.map((p, i) => [String(i), `${i + 1}: ${p}`]), String(v.prompt));
  $("picker").disabled = v.n_prompts < 2;
  await Plotly.react("heatmap", v.figure.data, v.figure.layout, PLOT);
  $("heatmap").removeAllListeners?.("plotly_click");
  $("heatmap").on("plotly_click", (ev) => {
    const pt = ev.points.find((p) => p.curveNumber === 0);
    if (pt) pinCell(pt.y, pt.x);
  });
  $("summary").replaceChildren(...v.summary.map((line) => Object.assign(document.createElement("li"), { textContent: line })));
  drawAnswer(v);
  setDownloads();
  saveURL();
  if (state.pin) await pinCell(state.pin.row, state.pin.column);
  else $("pin").hidden = true;
}
function setDownloads() {
  for (const fmt of ["json", "parquet", "png", "html"]) {
    const q = new URLSearchParams({ format: fmt, prompt: state.prompt, stat: state.stat, target: state.target });
    $(`dl-${fmt}`).href = `/api/results/${state.result}/download?${q}`;
  }
}
function drawAnswer(v) {
  $("answer-view").hidden = !v.answer;
  if (!v.answer) return;
  const trace = { x: v.row_names, y: v.answer.logprobs, mode: "lines+markers", name: `log p(${v.answer.text})` };
  Plotly.react("answer-plot", [trace], {
    width: 700, height: 260, margin: { l: 60, r: 20, t: 10, b: 60 },
    xaxis: { title: { text: "row (after block)" }, type: "category" }, yaxis: { title: { text: "log p (nats)" } },
  }, PLOT);
}

// ---- the pinned cell -----------------------------------------------------------------------------------
async function pinCell(row, column) {
  state.pin = { row, column };
  saveURL();
  const q = new URLSearchParams({ prompt: state.prompt, row, column });
  let p;
  try { p = await (await api(`/api/results/${state.result}/pin?${q}`)).json(); }
  catch (e) { state.pin = null; return status(e.message, true); }
  $("pin").hidden = false;
  $("pin-token").textContent = p.token;
  $("pin-where").textContent = `row ${p.row_names[p.row]}, position ${p.position}` + (p.exact ? "" : " (from the kept top-k)");
  const probs = { x: p.row_names, y: p.probs, mode: "lines+markers", name: "probability" };
  const ranks = { x: p.row_names, y: p.ranks, mode: "lines+markers", name: "rank", yaxis: "y2", line: { dash: "dot" } };
  await Plotly.react("trajectory", [probs, ranks], {
    width: 370, height: 300, margin: { l: 50, r: 50, t: 10, b: 60 }, legend: { orientation: "h", y: -0.3 },
    xaxis: { type: "category", title: { text: "row" } }, yaxis: { title: { text: "p" }, range: [0, 1] },
    yaxis2: { overlaying: "y", side: "right", type: "log", autorange: "reversed", dtick: 1, title: { text: "rank" } },
  }, PLOT);
  $("topk").tBodies[0].replaceChildren(...p.top.map(([tok, prob], i) => {
    const tr = document.createElement("tr");
    for (const text of [String(i + 1), tok, prob.toFixed(3)]) tr.appendChild(Object.assign(document.createElement("td"), { textContent: text }));
    return tr;
  }));
  const last = state.view && column === state.view.positions.length - 1 || column === -1;
  $("why").disabled = !(last && !state.file && state.prompts.length);
  $("why").title = $("why").disabled ? "pin a cell of the last position of a prompt you ran" : "";
  $("why").dataset.token = String(p.token_id);
  Plotly.purge("attribution");
  Plotly.relayout("heatmap", { shapes: [{ type: "rect", xref: "x", yref: "y", x0: column - 0.5, x1: column + 0.5,
    y0: row - 0.5, y1: row + 0.5, line: { color: "#cf222e", width: 3 } }] });
}
async function why() {
  status("attributing…");
  try {
    const body = { model: state.model, prompt: state.prompts[state.prompt], target: Number($("why").dataset.token), position: -1 };
    const a = await (await postJSON("/api/attribute", body)).json();
    const layout = { ...a.figure.layout, width: Math.min(900, $("main").clientWidth) };
    await Plotly.react("attribution", a.figure.data, layout, PLOT);
    status(a.summary.split("\n")[0]);
  } catch (e) { status(e.message, true); }
}

// ---- compare, open ---------------------------------------------------------------------------------------
async function compare() {
  if (!state.result) return status("run a prompt or open a result first", true);
  const choice = $("compare-with").value;
  let other, otherPrompt = 0;
  status("comparing…");
  try {
    const text = state.prompts[state.prompt];
    if (choice === "prompt") {
      const p = $("compare-prompt").value.trim();
      if (!p) return status("type the other prompt", true);
      other = (await postJSON("/api/run", runBody([p], state.model, state.lens))).headers.get("x-result-id");
    } else {
      if (!text) return status("compare needs a prompt you ran (not an opened file)", true);
      const [model, lens] = choice.split("|");
      other = (await postJSON("/api/run", runBody([text], model, lens))).headers.get("x-result-id");
    }
    const q = new URLSearchParams({ other, prompt: state.prompt, other_prompt: otherPrompt, stat: state.stat, target: state.target });
    const c = await (await api(`/api/results/${state.result}/compare?${q}`)).json();
    await Plotly.react("compare-plot", c.figure.data, c.figure.layout, PLOT);
    status(`compared: ${c.names.join(" | ")}`);
  } catch (e) { status(e.message, true); }
}
async function opened(o) {
  state.result = o.id; state.prompt = 0; state.pin = null; state.prompts = [];
  if (state.view && state.view.target !== null) { state.stat = "top_probs"; state.target = 0; } // its targets differ
  await showView();
  status(`opened ${o.name}: ${o.n_prompts} prompt${o.n_prompts === 1 ? "" : "s"}${o.n_prompts > 1 ? " (pick one above)" : ""}`);
}
async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  status(`opening ${file.name}…`);
  try { state.file = null; await opened(await (await api("/api/open", { method: "POST", body: form })).json()); }
  catch (e) { status(e.message, true); }
}
async function openFile(id) {
  try { state.file = id; await opened(await (await api(`/api/files/${encodeURIComponent(id)}`)).json()); }
  catch (e) { status(e.message, true); }
}

// ---- wiring ------------------------------------------------------------------------------------------------
function wire() {
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); runPrompts(); }
  });
  for (const id of ["targets", "answer"]) {
    $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); runPrompts(true); } });
  }
  $("run").addEventListener("click", () => runPrompts());
  $("model").addEventListener("change", () => { state.model = $("model").value; fillLenses(); if (state.prompts.length) runPrompts(); });
  $("lens").addEventListener("change", () => { state.lens = $("lens").value; fillLenses(); if (state.prompts.length) runPrompts(true); });
  $("subblocks").addEventListener("change", () => { state.subblocks = $("subblocks").checked; if (state.prompts.length) runPrompts(); });
  $("stat").addEventListener("change", () => {
    const [stat, target] = $("stat").value.split(":");
    state.stat = stat; state.target = Number(target);
    showView().catch((e) => status(e.message, true));
  });
  $("picker").addEventListener("change", () => { state.prompt = Number($("picker").value); state.pin = null; showView().catch((e) => status(e.message, true)); });
  $("upload").addEventListener("change", () => { if ($("upload").files[0]) upload($("upload").files[0]); });
  $("files").addEventListener("change", () => { if ($("files").value) openFile($("files").value); });
  $("why").addEventListener("click", why);
  $("compare").addEventListener("click", compare);
}

async function start() {
  loadURL();
  wire();
  try { await loadModels(); } catch (e) { return status(e.message, true); }
  $("subblocks").checked = state.subblocks;
  $("prompt").value = state.prompts.join("\n");
  $("targets").value = state.targets;
  $("answer").value = state.answer;
  if (state.file) await openFile(state.file);
  else if (state.prompts.length) await runPrompts(true);
  else status(state.models.length ? "type a prompt and press Enter" : "no model loaded: open a saved result");
  $("prompt").focus();
}
start();
