// The page: microphone or WAV file -> capture worklet (16 kHz Int16 frames) -> EarshotClient
// -> partial and final text on screen; past sessions from the transcript API.

import { EarshotClient } from './earshot-client.js';

const $ = (id) => document.getElementById(id);
const ui = {
  start: $('start'),
  stop: $('stop'),
  upload: $('upload'),
  state: $('state'),
  sessionId: $('session-id'),
  latency: $('latency'),
  level: $('level'),
  notice: $('notice'),
  finals: $('finals'),
  partial: $('partial'),
  placeholder: $('placeholder'),
  sessions: $('sessions'),
  refresh: $('refresh'),
  sessionView: $('session-view'),
  sessionViewTitle: $('session-view-title'),
  sessionText: $('session-text'),
  copy: $('copy'),
  download: $('download'),
};

const STATE_WORDS = {
  idle: 'Ready',
  connecting: 'Connecting…',
  open: 'Listening',
  reconnecting: 'Reconnecting…',
  closing: 'Finishing…',
  closed: 'Stopped',
};

const ERROR_WORDS = {
  overloaded: 'The server is busy right now. Try again in a moment.',
  engine_failure: 'The speech engine stopped working. The transcript so far is saved.',
  engine_unavailable: 'No speech engine is available right now.',
  buffer_limit: 'Audio arrived faster than it could be transcribed, so the session was stopped. The transcript so far is saved.',
  frame_too_large: 'An audio chunk was too large for the server.',
  invalid_audio: 'The server could not read the audio.',
  invalid_parameter: 'The server refused the audio settings.',
  audio_dropped: 'The connection was down for too long; some audio could not be kept.',
  message_too_big: 'A message was too large for the server.',
  too_fast: 'Audio arrived much faster than real time, so the session was stopped. The transcript so far is saved.',
  slow_consumer: 'This page stopped reading the results, so the session was stopped. The transcript so far is saved.',
  idle_timeout: 'Nothing was heard for a while, so the session ended.',
  first_message_timeout: 'No audio arrived after connecting, so the session ended.',
  ping_timeout: 'The connection stopped answering, so the session ended.',
  internal: 'The server hit an internal error; the session was closed.',
};

const CLOSE_WORDS = {
  normal: 'Session ended. Everything you said is transcribed and saved.',
  client_closed: 'Session ended.',
  buffer_limit: ERROR_WORDS.buffer_limit,
  engine_failure: ERROR_WORDS.engine_failure,
  overloaded: ERROR_WORDS.overloaded,
  idle_timeout: ERROR_WORDS.idle_timeout,
  too_fast: ERROR_WORDS.too_fast,
  server_shutdown: 'The server restarted. Everything heard before that is transcribed and saved.',
};

/** What is running: the client and the audio graph feeding it. */
let run = null;
const latencies = [];

ui.start.addEventListener('click', () => begin(microphoneSource));
ui.stop.addEventListener('click', () => end());
ui.upload.addEventListener('change', () => {
  const file = ui.upload.files?.[0];
  if (file) begin((context) => fileSource(context, file));
});
ui.refresh.addEventListener('click', () => loadSessions());
loadSessions();

async function begin(makeSource) {
  if (run) return;
  clearTranscript();
  setNotice('');
  ui.start.disabled = true;
  ui.upload.disabled = true;
  ui.stop.disabled = false;
  const current = { client: null, context: null, node: null, stopSource: () => {}, stopping: false };
  run = current;
  try {
    current.context = new AudioContext();
    await current.context.audioWorklet.addModule('capture-worklet.js');
    current.node = new AudioWorkletNode(current.context, 'earshot-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { frameMs: 100 },
    });
    // The worklet only runs while connected to the destination; its output is silence.
    current.node.connect(current.context.destination);
    current.client = connectClient();
    current.node.port.onmessage = (event) => {
      const message = event.data;
      if (message.type === 'frame') {
        current.client.sendAudio(message.pcm);
        showLevel(message.level);
      }
    };
    await current.client.start();
    const source = await makeSource(current.context);
    current.stopSource = source.stop;
    source.node.connect(current.node);
    if (source.ended) source.ended.then(() => end());
  } catch (error) {
    setNotice(explainStartError(error), 'error');
    await teardown(current);
    finishRun();
  }
}

function connectClient() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const client = new EarshotClient(`${scheme}://${location.host}/v1/stt`);
  client.addEventListener('state', (e) => showState(e.detail.state));
  client.addEventListener('session', (e) => {
    ui.sessionId.textContent = e.detail.sessionId;
    if (e.detail.reconnected) setNotice('Reconnected; transcription continues in a new session.');
  });
  client.addEventListener('partial', (e) => {
    ui.placeholder.hidden = true;
    ui.partial.textContent = e.detail.text;
    noteLatency(e.detail.latencyMs);
  });
  client.addEventListener('final', (e) => {
    ui.partial.textContent = '';
    noteLatency(e.detail.latencyMs);
    if (!e.detail.text) return;
    ui.placeholder.hidden = true;
    const item = document.createElement('li');
    item.className = 'final';
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = formatTime(e.detail.startMs + e.detail.offsetMs);
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = e.detail.text;
    item.append(time, text);
    ui.finals.append(item);
  });
  client.addEventListener('slow_down', () =>
    setNotice('The server is catching up, so audio is now sent in larger chunks. Nothing is lost.'),
  );
  client.addEventListener('resume', () => setNotice(''));
  client.addEventListener('error', (e) =>
    setNotice(ERROR_WORDS[e.detail.code] ?? `Error: ${e.detail.message}`, 'error'),
  );
  client.addEventListener('reconnecting', (e) =>
    setNotice(
      `Connection lost (${e.detail.reason}). Reconnecting in ${(e.detail.delayMs / 1000).toFixed(1)} s (attempt ${e.detail.attempt})…`,
    ),
  );
  client.addEventListener('closed', (e) => {
    const words = CLOSE_WORDS[e.detail.reason] ?? `Session ended: ${e.detail.reason}.`;
    const isError = !['normal', 'client_closed', 'stopped'].includes(e.detail.reason);
    if (!isError || !ui.notice.classList.contains('error')) setNotice(words, isError ? 'error' : '');
    ui.notice.dataset.closeReason = e.detail.reason;
    if (run?.client === client && !run.stopping) {
      // Closed by the server: stop capturing.
      teardown(run).then(finishRun);
    }
    loadSessions();
  });
  return client;
}

/** Stops capture, sends the last audio, and waits for the last finals. */
async function end() {
  const current = run;
  if (!current || current.stopping) return;
  current.stopping = true;
  ui.stop.disabled = true;
  current.stopSource();
  await flushWorklet(current.node);
  await current.client?.stop();
  await teardown(current);
  finishRun();
}

function finishRun() {
  run = null;
  ui.start.disabled = false;
  ui.upload.disabled = false;
  ui.stop.disabled = true;
  ui.upload.value = '';
  showLevel(0);
}

async function teardown(current) {
  current.stopSource();
  current.node?.disconnect();
  if (current.context && current.context.state !== 'closed') await current.context.close();
}

function flushWorklet(node) {
  if (!node) return Promise.resolve();
  return new Promise((resolve) => {
    const previous = node.port.onmessage;
    node.port.onmessage = (event) => {
      previous?.(event);
      if (event.data.type === 'flushed') resolve();
    };
    node.port.postMessage({ type: 'flush' });
    setTimeout(resolve, 1000);
  });
}

async function microphoneSource(context) {
  // Raw audio: the recogniser copes better with it than with processed speech.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  return {
    node: context.createMediaStreamSource(stream),
    stop: () => stream.getTracks().forEach((track) => track.stop()),
  };
}

/** A WAV file played into the same capture path, at real-time pace. */
async function fileSource(context, file) {
  const buffer = await context.decodeAudioData(await file.arrayBuffer());
  const node = context.createBufferSource();
  node.buffer = buffer;
  const ended = new Promise((resolve) => {
    node.onended = resolve;
  });
  node.start();
  setNotice(`Streaming ${file.name} (${buffer.duration.toFixed(1)} s) at real-time pace…`);
  return {
    node,
    ended,
    stop: () => {
      try {
        node.stop();
      } catch {
        // Already stopped.
      }
    },
  };
}

function explainStartError(error) {
  if (error?.name === 'NotAllowedError') return 'Microphone access was refused. Allow it in the browser to transcribe speech.';
  if (error?.name === 'NotFoundError') return 'No microphone was found. You can stream a WAV file instead.';
  if (error?.name === 'EncodingError') return 'That file could not be read as audio. Choose a WAV file.';
  return `Could not start: ${error?.message ?? error}`;
}

function showState(state) {
  ui.state.dataset.state = state;
  ui.state.textContent = STATE_WORDS[state] ?? state;
}

function showLevel(level) {
  // -60 dBFS .. 0 dBFS onto the meter.
  const db = 20 * Math.log10(Math.max(level, 1e-6));
  const percent = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
  ui.level.style.width = `${percent}%`;
  ui.level.parentElement.setAttribute('aria-valuenow', String(Math.round(percent)));
}

function noteLatency(ms) {
  if (typeof ms !== 'number') return;
  latencies.push(ms);
  if (latencies.length > 20) latencies.shift();
  const sorted = [...latencies].sort((a, b) => a - b);
  ui.latency.textContent = `${Math.round(sorted[Math.floor(sorted.length / 2)])} ms`;
}

function setNotice(text, kind = '') {
  ui.notice.textContent = text;
  ui.notice.className = kind;
  ui.notice.hidden = !text;
}

function clearTranscript() {
  ui.finals.replaceChildren();
  ui.partial.textContent = '';
  ui.sessionId.textContent = '—';
  ui.latency.textContent = '—';
  ui.placeholder.hidden = false;
  latencies.length = 0;
  delete ui.notice.dataset.closeReason;
}

function formatTime(ms) {
  const total = Math.max(0, ms) / 1000;
  const minutes = Math.floor(total / 60);
  const seconds = (total % 60).toFixed(1).padStart(4, '0');
  return `${String(minutes).padStart(2, '0')}:${seconds}`;
}

// --- past sessions ---

async function loadSessions() {
  try {
    const response = await fetch('/v1/sessions?limit=50');
    const body = await response.json();
    if (!response.ok) throw new Error(body.error?.message ?? response.statusText);
    showSessions(body.sessions);
  } catch (error) {
    ui.sessions.replaceChildren(listNote(`Past sessions are unavailable: ${error.message}`));
  }
}

function showSessions(sessions) {
  if (sessions.length === 0) {
    ui.sessions.replaceChildren(listNote('No sessions yet.'));
    return;
  }
  ui.sessions.replaceChildren(
    ...sessions.map((session) => {
      const item = document.createElement('li');
      item.dataset.sessionId = session.id;
      const when = document.createElement('span');
      when.textContent = new Date(session.started_at_ms).toLocaleString();
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = `${(session.audio_ms / 1000).toFixed(1)} s · ${session.status}${session.close_reason ? ` (${session.close_reason})` : ''}`;
      item.append(when, meta);
      item.addEventListener('click', () => showSession(session.id, item));
      return item;
    }),
  );
}

function listNote(text) {
  const item = document.createElement('li');
  item.className = 'empty';
  item.textContent = text;
  return item;
}

async function showSession(id, item) {
  for (const other of ui.sessions.children) other.classList.toggle('selected', other === item);
  const response = await fetch(`/v1/sessions/${encodeURIComponent(id)}`);
  const body = await response.json();
  if (!response.ok) {
    setNotice(`Could not load the session: ${body.error?.message ?? response.statusText}`, 'error');
    return;
  }
  const text = body.segments.map((s) => `[${formatTime(s.start_ms)}] ${s.text}`).join('\n');
  ui.sessionView.hidden = false;
  ui.sessionView.dataset.sessionId = id;
  ui.sessionViewTitle.textContent = `Session ${id}`;
  ui.sessionText.textContent = text || '(no speech was recognised)';
  ui.copy.onclick = async () => {
    await navigator.clipboard.writeText(text);
    setNotice('Transcript copied.');
  };
  ui.download.onclick = () => {
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([text + '\n'], { type: 'text/plain' }));
    link.download = `earshot-${id}.txt`;
    link.click();
    URL.revokeObjectURL(link.href);
  };
}
