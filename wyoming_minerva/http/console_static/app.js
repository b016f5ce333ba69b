// wyoming-minerva console: plain script, no dependencies. Everything shown comes from the HTTP API; the API key
// (when the server asks for one) is kept in sessionStorage and sent as a Bearer token (WebSocket: a subprotocol).
"use strict";

const KEY = "minerva-api-key";
const $ = (id) => document.getElementById(id);
const state = { jobs: new Map(), wakeAbort: null, mic: null, catalogTimer: 0, figuresTimer: 0 };

// ---- helpers -------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

const seconds = (s) => (s === null || s === undefined ? "—" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
const apiKey = () => sessionStorage.getItem(KEY) || "";

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

class NeedsKey extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { askKey(); throw new NeedsKey("an API key is needed"); }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();

// Server-sent events over fetch (EventSource cannot send the API key). Calls onEvent(type, data) per event.
async function sse(path, onEvent, signal, onOpen) {
  const response = await api(path, { signal, headers: { Accept: "text/event-stream" } });
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", type = "message", data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (data.length) onEvent(type, JSON.parse(data.join("\n")));
        type = "message"; data = [];
      } else if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
  }
}

// ---- API key ---------------------------------------------------------------------------------------

function askKey() {
  const dialog = $("key-dialog");
  $("key-button").hidden = false;
  say("This server needs its API key.", true);
  if (!dialog.open) { dialog.showModal(); $("key-input").focus(); }
}

function setupKey() {
  $("key-button").addEventListener("click", askKey);
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    $("key-input").value = "";
    start();
  });
}

// ---- services and figures --------------------------------------------------------------------------

function renderServices(status) {
  $("version").textContent = `v${status.version}`;
  const rows = status.services.map((s) => el("tr", {},
    el("th", { scope: "row" }, s.service),
    el("td", { "data-label": "Address" }, s.address || "not running"),
    el("td", { "data-label": "Zeroconf" }, s.zeroconf || "—"),
    el("td", { "data-label": "Program" }, s.program),
    el("td", { "data-label": "Models" }, s.models.length ? s.models.slice(0, 12).map((m) =>
      el("span", { class: m.loaded ? "tag on" : "tag", title: m.loaded ? "loaded" : "not loaded" },
        `${m.name}${m.loaded ? " · loaded" : ""}`)) : "—",
      s.models.length > 12 ? ` and ${s.models.length - 12} more` : ""),
  ));
  $("services-body").replaceChildren(...rows);
  $("extras").textContent = "Speaker recognition and upstream servers: "
    + (status.speakers || status.upstreams ? "see below." : "not in this build.");
}

const family = (metrics, name) => (metrics[name] ? metrics[name].samples : []);
const total = (metrics, name) => family(metrics, name).reduce((sum, s) => sum + (s.value || 0), 0);

function figure(label, value) { return el("div", {}, el("dt", {}, label), el("dd", {}, String(value))); }

function renderFigures(status) {
  const m = status.metrics;
  const items = [
    figure("Inference queue", `${total(m, "minerva_inference_queue_depth")} / ${total(m, "minerva_inference_queue_capacity")}`),
    figure("Inference workers", total(m, "minerva_inference_workers")),
    figure("Models loaded", family(m, "minerva_model_loaded").filter((s) => s.value).length),
    figure("HTTP requests", total(m, "minerva_http_requests")),
    figure("In flight", total(m, "minerva_http_requests_in_flight")),
    figure("Errors", total(m, "minerva_http_errors")),
  ];
  for (const h of family(m, "minerva_http_request_duration_seconds")) {
    if (h.count && ["/v1/audio/speech", "/v1/audio/transcriptions"].includes(h.labels.route)) {
      items.push(figure(`${h.labels.route.replace("/v1/audio/", "")} p50 / p95`, `${seconds(h.p50)} / ${seconds(h.p95)}`));
    }
  }
  const live = family(m, "minerva_realtime_final_latency_seconds")[0];
  items.push(figure("Live sessions", total(m, "minerva_realtime_sessions")));
  if (live && live.count) items.push(figure("Live final p50", seconds(live.p50)));
  const tts = family(m, "minerva_tts_stream_first_audio_seconds")[0];
  if (tts && tts.count) items.push(figure("Speech first audio p50", seconds(tts.p50)));
  $("figures-list").replaceChildren(...items);
}

async function refreshStatus() {
  clearTimeout(state.figuresTimer);
  try {
    const status = await json("/v1/console/status");
    renderServices(status);
    renderFigures(status);
    say(`Connected · up ${Math.round(status.uptime_seconds)} s`);
    if (!document.body.dataset.ready) performance.mark("console-usable");
    document.body.dataset.ready = "1";
  } catch (error) {
    if (error instanceof NeedsKey) return say("Waiting for the API key", true);
    say(`Cannot reach the server: ${error.message}`, true);
  }
  state.figuresTimer = setTimeout(() => { if (!document.hidden) refreshStatus(); else state.figuresTimer = setTimeout(refreshStatus, 2000); }, 2000);
}

// ---- wake word detections --------------------------------------------------------------------------

async function followWake() {
  if (state.wakeAbort) state.wakeAbort.abort();
  const abort = new AbortController();
  state.wakeAbort = abort;
  $("wake-state").textContent = "Connecting…";
  try {
    await sse("/v1/wake/events", (_, event) => {
      if (event.type !== "wake.detection") return;
      const when = new Date(event.time * 1000).toLocaleTimeString();
      const item = el("li", {}, `${when} — ${event.name} (${event.engine}, ${Math.round(event.probability * 100)} %) from ${event.client}`);
      $("wake-list").prepend(item);
      while ($("wake-list").children.length > 50) $("wake-list").lastChild.remove();
    }, abort.signal, () => { $("wake-state").textContent = "Listening for detections from every wake word stream."; });
  } catch (error) {
    if (abort.signal.aborted || error instanceof NeedsKey) return;
    if (error.status === 503) { $("wake-state").textContent = "Wake word detection is not running on this server."; return; }
    $("wake-state").textContent = `Detection feed interrupted (${error.message}); reconnecting…`;
  }
  if (!abort.signal.aborted) setTimeout(followWake, 3000);
}

// ---- try it --------------------------------------------------------------------------------------------

async function loadVoices() {
  try {
    const { voices } = await json("/v1/audio/voices");
    const select = $("speak-voice");
    const current = select.value;
    select.replaceChildren(...voices.filter((v) => !v.maps_to).map((v) => el("option", { value: v.id }, v.id)));
    if (current) select.value = current;
  } catch (error) {
    if (!(error instanceof NeedsKey)) $("speak-state").textContent = `No voices: ${error.message}`;
  }
}

function setupSpeak() {
  $("speak-speed").addEventListener("input", () => { $("speak-speed-value").textContent = Number($("speak-speed").value).toFixed(2); });
  $("speak-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("speak-button");
    button.disabled = true;
    $("speak-state").textContent = "Synthesizing…";
    try {
      const body = { model: "tts-1", input: $("speak-text").value, voice: $("speak-voice").value || undefined,
        speed: Number($("speak-speed").value), response_format: "wav" };
      const response = await api("/v1/audio/speech", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
      const audio = $("speak-audio");
      if (audio.src) URL.revokeObjectURL(audio.src);
      audio.src = URL.createObjectURL(await response.blob());
      $("speak-state").textContent = "Playing.";
      await audio.play().catch(() => { $("speak-state").textContent = "Ready: press play."; });
    } catch (error) {
      $("speak-state").textContent = `Failed: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

function setupUpload() {
  $("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return;
    $("upload-button").disabled = true;
    $("upload-state").textContent = "Transcribing…";
    $("upload-text").textContent = "";
    try {
      const form = new FormData();
      form.append("file", file);
      form.append("model", "whisper-1");
      const result = await json("/v1/audio/transcriptions", { method: "POST", body: form });
      $("upload-text").textContent = result.text || "(nothing was said)";
      $("upload-state").textContent = "Done.";
    } catch (error) {
      $("upload-state").textContent = `Failed: ${error.message}`;
    } finally {
      $("upload-button").disabled = false;
    }
  });
}

function micSay(finals, interim) {
  const text = $("mic-text");
  text.replaceChildren(finals.join(" "), interim ? " " : "", interim ? el("em", {}, interim) : "");
}

async function startMic() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("mic-state").textContent = "The microphone needs https:// or localhost in the address.";
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/audio/transcriptions/stream`;
  const socket = apiKey() ? new WebSocket(url, ["minerva", `openai-insecure-api-key.${apiKey()}`]) : new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const finals = [];
  state.mic = { stream, context, socket };
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "start", rate: context.sampleRate, width: 2, channels: 1 }));
    source.connect(processor);
    processor.connect(context.destination);
    $("mic-state").textContent = "Listening… speak now.";
  };
  processor.onaudioprocess = (e) => {
    if (socket.readyState !== WebSocket.OPEN) return;
    const input = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(input.length);
    for (let i = 0; i < input.length; i++) pcm[i] = Math.max(-1, Math.min(1, input[i])) * 32767;
    socket.send(pcm.buffer);
  };
  socket.onmessage = (e) => {
    const message = JSON.parse(e.data);
    if (message.type === "transcript" && message.is_final) { if (message.text) finals.push(message.text); micSay(finals, ""); }
    else if (message.type === "transcript") micSay(finals, message.text);
    else if (message.type === "error") $("mic-state").textContent = `Error: ${message.message}`;
  };
  socket.onclose = () => stopMic(false);
}

function stopMic(sendStop = true) {
  const mic = state.mic;
  if (!mic) return;
  state.mic = null;
  if (sendStop && mic.socket.readyState === WebSocket.OPEN) mic.socket.send(JSON.stringify({ type: "stop" }));
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.context.close();
  $("mic-button").textContent = "Start listening";
  $("mic-button").setAttribute("aria-pressed", "false");
  $("mic-state").textContent = "Stopped.";
}

function setupMic() {
  $("mic-button").addEventListener("click", async () => {
    if (state.mic) return stopMic();
    $("mic-button").textContent = "Stop listening";
    $("mic-button").setAttribute("aria-pressed", "true");
    try { await startMic(); } catch (error) { $("mic-state").textContent = `Microphone: ${error.message}`; stopMic(false); }
  });
}

// ---- models and voices ---------------------------------------------------------------------------------

function progressText(job) {
  if (job.state === "error" || job.state === "cancelled") return job.error ? job.error.message : job.state;
  const pct = job.percent === null ? "" : `${job.percent.toFixed(0)} %`;
  const rate = job.rate ? ` · ${bytes(job.rate)}/s` : "";
  return `${job.phase} ${pct}${rate}`;
}

function actions(item) {
  const job = state.jobs.get(item.id) || item.job;
  if (job && job.state === "running") {
    return [
      el("progress", { max: "100", value: job.percent === null ? null : String(job.percent), "aria-label": `Installing ${item.name}` }),
      el("span", { class: "muted", role: "status" }, progressText(job)),
      el("button", { type: "button", class: "secondary", onclick: () => cancel(job.id) }, "Cancel"),
    ];
  }
  const parts = [];
  if (job && job.state !== "done") parts.push(el("span", { class: "error", role: "alert" }, progressText(job)));
  if (item.installed && item.removable && !item.default) {
    parts.push(el("button", { type: "button", class: "secondary", "aria-label": `Delete ${item.name}`, onclick: () => remove(item) }, "Delete"));
  } else if (!item.installed && item.available) {
    parts.push(el("button", { type: "button", "aria-label": `Install ${item.name}`, onclick: () => install(item) }, "Install"));
  }
  return parts;
}

function describe(item) {
  const tags = [];
  if (item.installed) tags.push(el("span", { class: "tag on" }, "installed"));
  if (item.default) tags.push(el("span", { class: "tag" }, "default"));
  if (item.loaded) tags.push(el("span", { class: "tag on" }, "loaded"));
  if (item.in_use) tags.push(el("span", { class: "tag on" }, "in use"));
  const size = item.installed ? `${bytes(item.size_on_disk)} on disk` : `${bytes(item.size_bytes)} to download`;
  const facts = [item.languages.join(", "), item.quality, item.speakers > 1 ? `${item.speakers} speakers` : "", size].filter(Boolean);
  return [el("div", { class: "name" }, item.name, " ", tags), el("div", { class: "muted" }, item.description, item.description ? " · " : "", facts.join(" · "))];
}

function renderItem(item) {
  return el("li", { "data-id": item.id }, el("div", {}, describe(item)), el("div", { class: "actions" }, actions(item)));
}

let lastItems = [];

function renderCatalog(listing) {
  lastItems = listing.data;
  const shown = listing.data.slice(0, 100);
  const list = $("models-list");
  list.replaceChildren(...shown.map(renderItem));
  if (!shown.length) list.append(el("li", {}, "Nothing matches."));
  if (listing.data.length > shown.length) list.append(el("li", { class: "muted" }, `${listing.data.length - shown.length} more: refine the search.`));
  const notes = listing.sources.filter((s) => !s.ok).map((s) => `${s.kind}: ${s.error}`);
  $("models-sources").textContent = notes.length ? `Sources: ${notes.join(" · ")}` : "";
}

function updateRow(id) {
  const item = lastItems.find((x) => x.id === id);
  const row = document.querySelector(`#models-list li[data-id="${CSS.escape(id)}"]`);
  if (item && row) row.lastChild.replaceChildren(...actions(item));
}

async function loadCatalog() {
  const params = new URLSearchParams();
  if ($("models-kind").value) params.set("kind", $("models-kind").value);
  if ($("models-query").value.trim()) params.set("q", $("models-query").value.trim());
  if ($("models-installed").checked) params.set("installed", "true");
  try {
    renderCatalog(await json(`/v1/catalog?${params}`));
  } catch (error) {
    if (!(error instanceof NeedsKey)) $("models-sources").textContent = `Catalog: ${error.message}`;
  }
}

async function follow(job) {
  state.jobs.set(job.entry, job);
  updateRow(job.entry);
  try {
    await sse(`/v1/jobs/${job.id}/events`, (_, snapshot) => { state.jobs.set(job.entry, snapshot); updateRow(job.entry); });
  } catch (error) {
    state.jobs.set(job.entry, { ...job, state: "error", error: { message: error.message } });
  }
  const last = state.jobs.get(job.entry);
  say(last.state === "done" ? `Installed ${job.entry}.` : `${job.entry}: ${progressText(last)}`, last.state !== "done");
  if (last.state === "done") state.jobs.delete(job.entry);
  await loadCatalog();
  loadVoices();
}

async function install(item) {
  try {
    follow(await json(`/v1/catalog/${encodeURIComponent(item.id)}/install`, { method: "POST" }));
  } catch (error) {
    state.jobs.set(item.id, { id: "", entry: item.id, state: "error", error: { message: error.message } });
    updateRow(item.id);
  }
}

async function cancel(jobId) {
  try { await api(`/v1/jobs/${jobId}`, { method: "DELETE" }); } catch (error) { say(error.message, true); }
}

async function remove(item) {
  if (!confirm(`Delete ${item.name} (${bytes(item.size_on_disk)})?`)) return;
  try {
    await api(`/v1/catalog/${encodeURIComponent(item.id)}`, { method: "DELETE" });
    say(`Deleted ${item.name}.`);
  } catch (error) {
    say(`Cannot delete ${item.name}: ${error.message}`, true);
  }
  await loadCatalog();
  loadVoices();
}

function setupCatalog() {
  const later = () => { clearTimeout(state.catalogTimer); state.catalogTimer = setTimeout(loadCatalog, 250); };
  $("models-kind").addEventListener("change", loadCatalog);
  $("models-installed").addEventListener("change", loadCatalog);
  $("models-query").addEventListener("input", later);
  $("models-filter").addEventListener("submit", (e) => { e.preventDefault(); loadCatalog(); });
}

// ---- start -----------------------------------------------------------------------------------------------

function start() {
  if (document.documentElement.dataset.apiKey === "required" && !apiKey()) return askKey();
  refreshStatus();
  followWake();
  loadVoices();
  loadCatalog();
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupSpeak();
  setupUpload();
  setupMic();
  setupCatalog();
  start();
});
