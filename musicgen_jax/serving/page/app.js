// The musicgen-jax web page: compose a request, generate (REST) or stream (WebSocket), listen.
// Plain browser JavaScript, no build step. `window.musicgen` exposes state for tests and the console.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  ready: false,
  busy: false,
  socket: null,
  objectUrl: null,
  apiKey: localStorage.getItem("musicgen-api-key") || "",
  stream: { chunks: 0, samples: 0, done: false, stopped: false, error: null },
  lastTask: null,
};
window.musicgen = state;

// ------------------------------------------------------------------------------ HTTP helpers

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  if (state.apiKey) headers["Authorization"] = "Bearer " + state.apiKey;
  return headers;
}

function describeError(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => {
      const where = (e.loc || []).filter((p) => p !== "body").join(".");
      return where ? `${where}: ${e.msg}` : e.msg;
    }).join("; ");
  }
  return `request failed (${status})`;
}

async function api(path, options) {
  options = options || {};
  const response = await fetch(path, Object.assign({}, options, { headers: authHeaders(options.headers) }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) throw new Error(describeError(body, response.status));
  return body;
}

async function fetchAudio(taskId) {
  const response = await fetch(`/download/${taskId}`, { headers: authHeaders() });
  if (!response.ok) throw new Error(`download failed (${response.status})`);
  return response.blob();
}

// ------------------------------------------------------------------------------ UI helpers

function say(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", !!isError);
}

function setProgress(fraction) {
  $("progress-bar").style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
}

function setBusy(busy, streaming) {
  state.busy = busy;
  $("generate").disabled = busy || !state.ready;
  $("stream").disabled = busy || !state.ready;
  $("stop").disabled = !(busy && streaming);
}

function showDetails(rows) {
  const list = $("details");
  list.replaceChildren();
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

function playBlob(blob, fileName, sampleRate) {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(blob);
  const player = $("player");
  player.src = state.objectUrl;
  player.load();
  const link = $("download");
  link.href = state.objectUrl;
  link.download = fileName;
  link.textContent = `Download ${fileName}`;
  link.hidden = false;
  showVisuals(blob, sampleRate, fileName); // visuals.js: its waveform and spectrogram
}

const fmt = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : value);

// ------------------------------------------------------------------------------ the form

function chips(containerId, values) {
  const container = $(containerId);
  container.replaceChildren();
  for (const value of values) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.textContent = value;
    chip.dataset.value = value;
    chip.addEventListener("click", () => chip.classList.toggle("on"));
    container.append(chip);
  }
}

function chosen(containerId) {
  return [...$(containerId).querySelectorAll(".chip.on")].map((chip) => chip.dataset.value);
}

function fillSelect(id, values) {
  const select = $(id);
  for (const value of values) {
    const option = document.createElement("option");
    option.value = option.textContent = value;
    select.append(option);
  }
}

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

function collectRequest() {
  const request = {
    prompt: $("unconditional").checked ? null : $("prompt").value.trim() || null,
    unconditional: $("unconditional").checked || null,
    duration: Number($("duration").value),
    temperature: numberOf("temperature"),
    top_k: numberOf("top_k"),
    top_p: numberOf("top_p"),
    guidance_scale: numberOf("guidance_scale"),
    num_beams: numberOf("num_beams"),
    seed: numberOf("seed"),
    genre: $("genre").value || null,
    key: $("key").value || null,
    mood: chosen("moods"),
    instruments: chosen("instruments"),
    tempo: $("tempo-on").checked ? Number($("tempo").value) : null,
    format: $("format").value,
    normalization_strategy: $("normalization").value,
  };
  for (const name of Object.keys(request)) {
    const value = request[name];
    if (value === null || (Array.isArray(value) && value.length === 0)) delete request[name];
  }
  return request;
}

// The chosen upload: { file, continuation } (continuation false: a melody), or null.
function chosenAudio() {
  const continuation = $("continuation-file").files[0];
  const melody = $("melody-file").disabled ? undefined : $("melody-file").files[0];
  if (continuation && melody) throw new Error("choose audio to continue or a melody, not both");
  if (melody) return { file: melody, continuation: false };
  return continuation ? { file: continuation, continuation: true } : null;
}

// The request as fetch options: JSON, or multipart/form-data with the upload as input_audio.
function requestBody(request, audio) {
  if (!audio) return { headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) };
  const form = new FormData();
  for (const [name, value] of Object.entries(request)) {
    for (const item of Array.isArray(value) ? value : [value]) form.append(name, String(item));
  }
  form.append("continuation", String(audio.continuation));
  form.append("input_audio", audio.file, audio.file.name);
  return { body: form }; // the browser sets the multipart boundary
}

async function base64Of(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

// ------------------------------------------------------------------------------ generate (REST)

async function generate() {
  setBusy(true, false);
  setProgress(0);
  say("queued…");
  try {
    const accepted = await api("/generate", Object.assign({ method: "POST" }, requestBody(collectRequest(), chosenAudio())));
    let task = null;
    for (;;) {
      task = await api(`/generate/${accepted.task_id}`);
      setProgress(task.progress);
      say(task.status === "queued" ? "queued…" : `generating… ${Math.round(task.progress * 100)}%`);
      if (task.status === "completed" || task.status === "failed") break;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    state.lastTask = task;
    if (task.status === "failed") throw new Error(task.error || "generation failed");
    playBlob(await fetchAudio(task.task_id), `musicgen-${task.task_id.slice(0, 8)}.${task.format}`, task.sample_rate);
    setProgress(1);
    say(`done: ${fmt(task.audio_seconds, 1)} s of audio`);
    showDetails([
      ["seed", task.seed],
      ["audio", `${fmt(task.audio_seconds, 2)} s, ${task.sample_rate} Hz, ${task.channels} ch`],
      ["queued", `${fmt(task.queued_seconds, 2)} s`],
      ["generation", `${fmt(task.generate_seconds, 2)} s (batch of ${task.batch_size})`],
      ["decode + file", `${fmt(task.decode_seconds, 2)} s`],
      ["real-time factor", task.real_time_factor ? `${fmt(task.real_time_factor, 2)}×` : null],
    ]);
  } catch (error) {
    say(error.message, true);
  } finally {
    setBusy(false, false);
    refreshTasks();
  }
}

// ------------------------------------------------------------------------------ stream (WebSocket)

function wavBlob(chunks, sampleRate, channels) {
  // 16-bit PCM WAV of interleaved float chunks, so the player can replay what was streamed.
  const samples = chunks.reduce((total, chunk) => total + chunk.length, 0);
  const buffer = new ArrayBuffer(44 + samples * 2);
  const view = new DataView(buffer);
  const text = (offset, value) => { for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, channels, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, sampleRate * channels * 2, true);
  view.setUint16(32, channels * 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples * 2, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++, offset += 2) {
      const s = Math.max(-1, Math.min(1, chunk[i]));
      view.setInt16(offset, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
  }
  return new Blob([buffer], { type: "audio/wav" });
}

async function startStream() {
  let upload = null;
  try {
    upload = chosenAudio();
    if (upload && upload.continuation) throw new Error("a stream cannot continue audio; choose a melody, or Generate");
  } catch (error) {
    say(error.message, true);
    return;
  }
  const melody = upload ? await base64Of(upload.file) : null;
  const sessionId = "page-" + Math.random().toString(36).slice(2, 12);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = state.apiKey ? `?api_key=${encodeURIComponent(state.apiKey)}` : "";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/stream/${sessionId}${query}`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  state.stream = { chunks: 0, samples: 0, done: false, stopped: false, error: null };
  const request = Object.assign(collectRequest(), { chunk_duration: numberOf("chunk") || 1 });
  delete request.format;
  delete request.normalization_strategy;
  if (melody) Object.assign(request, { input_audio: melody, continuation: false });
  const received = [];
  let meta = null;
  let audio = null;
  let nextTime = 0;
  setBusy(true, true);
  setProgress(0);
  say("connecting…");

  socket.onopen = () => socket.send(JSON.stringify({ type: "start_streaming", request }));
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") {
      const view = new DataView(event.data);
      const channels = view.getUint16(12, true);
      const samples = new Float32Array(event.data, 24);
      received.push(samples);
      const frames = samples.length / channels;
      state.stream.chunks += 1;
      state.stream.samples += frames;
      setProgress(state.stream.samples / (meta.duration * meta.sample_rate));
      say(`streaming… ${(state.stream.samples / meta.sample_rate).toFixed(1)} s received`);
      if (audio) {
        // Schedule each chunk right after the previous one: gapless playback while it generates.
        const buffer = audio.createBuffer(channels, frames, meta.sample_rate);
        for (let c = 0; c < channels; c++) {
          const data = buffer.getChannelData(c);
          for (let i = 0; i < frames; i++) data[i] = samples[i * channels + c];
        }
        const source = audio.createBufferSource();
        source.buffer = buffer;
        source.connect(audio.destination);
        nextTime = Math.max(nextTime, audio.currentTime + 0.05);
        source.start(nextTime);
        nextTime += buffer.duration;
      }
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "started") {
      meta = message;
      try {
        audio = new AudioContext({ sampleRate: message.sample_rate });
        nextTime = audio.currentTime + 0.15;
      } catch (_) {
        audio = null; // no audio output here: keep collecting, the player gets the result
      }
      say(`streaming (seed ${message.seed})…`);
    } else if (message.type === "done") {
      state.stream.done = true;
      state.stream.stopped = message.stopped;
      if (received.length) {
        playBlob(wavBlob(received, meta.sample_rate, meta.channels), `musicgen-stream-${message.seed}.wav`, meta.sample_rate);
      }
      const t = message.timings || {};
      say(message.stopped ? "stopped" : `streamed ${fmt(message.audio_seconds, 1)} s in ${message.chunks} chunks`);
      showDetails([
        ["seed", message.seed],
        ["chunks", message.chunks],
        ["first chunk after", t.first_chunk_seconds != null ? `${fmt(t.first_chunk_seconds, 2)} s` : null],
        ["generation", t.generate_seconds != null ? `${fmt(t.generate_seconds, 2)} s` : null],
        ["total", `${fmt(t.total_seconds, 2)} s`],
      ]);
      setProgress(message.stopped ? state.stream.samples / (meta.duration * meta.sample_rate) : 1);
    } else if (message.type === "error") {
      state.stream.error = message.message;
      say(message.message, true);
    }
  };
  socket.onerror = () => { if (!state.stream.done) say("the stream connection failed", true); };
  socket.onclose = () => { state.socket = null; setBusy(false, false); };
}

function stopStream() {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify({ type: "stop" }));
}

// ------------------------------------------------------------------------------ recent tasks

async function refreshTasks() {
  let tasks;
  try {
    tasks = (await api("/tasks?limit=12")).tasks;
  } catch (error) {
    return;
  }
  const list = $("tasks");
  list.replaceChildren();
  if (!tasks.length) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = "nothing yet";
    list.append(empty);
  }
  for (const task of tasks) {
    const item = document.createElement("li");
    const pill = document.createElement("span");
    pill.className = `pill ${task.status}`;
    pill.textContent = task.status;
    const what = document.createElement("div");
    what.className = "what";
    const title = document.createElement("div");
    title.textContent = task.prompt || "(no prompt)";
    const sub = document.createElement("small");
    sub.textContent = `${task.request.duration} s · seed ${task.seed} · ${task.format}` + (task.error ? ` · ${task.error}` : "");
    what.append(title, sub);
    item.append(pill, what);
    if (task.status === "completed") {
      const play = document.createElement("button");
      play.type = "button";
      play.textContent = "play";
      play.addEventListener("click", async () => {
        try {
          playBlob(await fetchAudio(task.task_id), `musicgen-${task.task_id.slice(0, 8)}.${task.format}`, task.sample_rate);
          $("player").play().catch(() => {});
        } catch (error) {
          say(error.message, true);
        }
      });
      item.append(play);
    }
    list.append(item);
  }
}

// ------------------------------------------------------------------------------ start-up

async function waitUntilReady() {
  for (;;) {
    try {
      const response = await fetch("/ready");
      const body = await response.json();
      state.ready = response.ok;
      $("ready-dot").className = "dot " + (response.ok ? "ok" : body.status === "failed" ? "bad" : "");
      $("ready-text").textContent = response.ok ? "ready" : body.status === "failed" ? "failed to load" : "warming up…";
      if (response.ok || body.status === "failed") break;
    } catch (_) {
      $("ready-text").textContent = "server unreachable";
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  setBusy(state.busy, false);
}

async function init() {
  $("api-key").value = state.apiKey;
  $("api-key").addEventListener("change", () => {
    state.apiKey = $("api-key").value.trim();
    localStorage.setItem("musicgen-api-key", state.apiKey);
    refreshTasks();
  });
  $("duration").addEventListener("input", () => { $("duration-out").textContent = `${$("duration").value} s`; });
  $("tempo").addEventListener("input", () => { $("tempo-out").textContent = `${$("tempo").value} BPM`; });
  $("tempo-on").addEventListener("change", () => { $("tempo").disabled = !$("tempo-on").checked; });
  $("unconditional").addEventListener("change", () => { $("prompt").disabled = $("unconditional").checked; });
  $("generate").addEventListener("click", generate);
  $("stream").addEventListener("click", startStream);
  $("stop").addEventListener("click", stopStream);
  $("refresh").addEventListener("click", refreshTasks);
  try {
    state.info = await api("/info");
    const info = state.info;
    $("model-name").textContent = info.model.split("/").filter(Boolean).slice(-2).join("/");
    $("model-name").title = info.model;
    fillSelect("genre", info.vocabulary.genres);
    fillSelect("key", info.vocabulary.keys);
    chips("moods", info.vocabulary.moods);
    chips("instruments", info.vocabulary.instruments);
    $("duration").max = info.max_duration;
    $("duration").value = Math.min(info.default_duration, info.max_duration);
    $("duration-out").textContent = `${$("duration").value} s`;
    $("prompt").maxLength = info.max_prompt_chars;
    // The melody upload only where the model follows one (MusicGen-melody).
    $("melody-field").hidden = !info.takes_melody;
    $("melody-file").disabled = !info.takes_melody;
  } catch (error) {
    say(error.message, true);
  }
  refreshTasks();
  waitUntilReady();
}

init();
