// A client for Earshot's WebSocket protocol v1 (docs/websocket.md), for browsers and Node.
//
//   const client = new EarshotClient('ws://127.0.0.1:8080/v1/stt');
//   client.addEventListener('partial', (e) => show(e.detail.text));
//   client.addEventListener('final', (e) => commit(e.detail.text));
//   await client.start();
//   client.sendAudio(int16Frame);          // 16 kHz mono PCM, ~100 ms per call
//   const closed = await client.stop();    // every final, then `closed`
//
// It adapts to `slow_down` (fewer, larger frames) and recovers on `resume`; when the connection
// drops it reconnects with backoff, keeps the audio captured meanwhile (bounded), and says so.

const DEFAULTS = {
  sampleRate: 16000,
  encoding: 'pcm_s16le',
  interimResults: true,
  language: undefined,
  endpointingMs: undefined,
  chunkMs: undefined,
  // Reconnection after an unexpected drop.
  reconnect: true,
  maxReconnectAttempts: 6,
  backoffMs: 500,
  maxBackoffMs: 8000,
  // While slowed down, audio goes out in frames of this length.
  slowFrameMs: 500,
  // Audio kept while reconnecting; older audio beyond it is dropped, with an `error` event.
  maxPendingMs: 30000,
  // Injected by tests.
  WebSocket: globalThis.WebSocket,
  now: () => globalThis.performance.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
};

/** Close codes after which reconnecting would only repeat the failure. */
const FINAL_CLOSE_CODES = new Set([1000, 1003, 1007, 1008, 1009]);

/** Sent-audio bookkeeping kept for latency, in frames. */
const MAX_SENT_LOG = 1200;

export class EarshotClient extends EventTarget {
  /**
   * @param {string} url the gateway's `ws://HOST:PORT/v1/stt`
   * @param {Partial<typeof DEFAULTS>} options
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    if (!this.options.WebSocket) throw new Error('no WebSocket implementation available');
    this.state = 'idle';
    this.sessionId = null;
    this.socket = null;
    /** Audio sent on earlier connections, so results can be placed on one timeline. */
    this.offsetMs = 0;
    this.slowedDown = false;
    this.reconnectAttempt = 0;
    this.reconnectTimer = null;
    this.stopping = false;
    this.closedMessage = null;
    this.resetConnection();
  }

  /** Connects; resolves with the session id once the server has said `session`. */
  start() {
    if (this.state !== 'idle') return Promise.reject(new Error(`already ${this.state}`));
    return new Promise((resolve, reject) => {
      this.pendingStart = { resolve, reject };
      this.open();
    });
  }

  /** Sends a frame of audio (an Int16Array, or a Float32Array with `encoding: 'pcm_f32le'`). */
  sendAudio(frame) {
    if (this.state === 'closed' || this.stopping) return;
    const samples = frame.length;
    const ms = (samples * 1000) / this.options.sampleRate;
    this.outgoing.push(frame);
    this.outgoingMs += ms;
    if (this.state !== 'open') {
      this.trimPending();
      return;
    }
    if (!this.slowedDown || this.outgoingMs >= this.options.slowFrameMs) this.drain();
  }

  /** Asks for everything heard so far as finals now. */
  finalize() {
    this.drain();
    this.sendJson({ type: 'finalize' });
  }

  ping(id = Math.floor(this.options.now())) {
    this.pings.set(id, this.options.now());
    this.sendJson({ type: 'ping', id });
  }

  /**
   * No more audio: sends what is queued and `close`, and resolves with the `closed` event's
   * detail once the server has sent every final and closed.
   */
  stop() {
    if (this.state === 'closed') return Promise.resolve(this.closedDetail);
    this.stopping = true;
    return new Promise((resolve) => {
      this.addEventListener('closed', (event) => resolve(event.detail), { once: true });
      if (this.state === 'open') {
        this.drain();
        this.sendJson({ type: 'close' });
        this.setState('closing');
      } else {
        // Not connected: nothing can be flushed.
        this.options.clearTimeout(this.reconnectTimer);
        this.finish({ reason: 'stopped', audio_ms: 0, segments: 0 }, null);
      }
    });
  }

  // --- internals ---

  resetConnection() {
    this.outgoing = [];
    this.outgoingMs = 0;
    this.sentMs = 0;
    this.sentLog = [];
    this.pings = new Map();
    this.droppedReported = false;
  }

  open() {
    this.setState(this.reconnectAttempt > 0 ? 'reconnecting' : 'connecting');
    const socket = new this.options.WebSocket(this.connectUrl());
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    this.closedMessage = null;
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onclose = (event) => this.onClose(event.code, event.reason);
    // An error is always followed by a close; the close decides what happens.
    socket.onerror = () => {};
  }

  connectUrl() {
    const { sampleRate, encoding, interimResults, language, endpointingMs, chunkMs } = this.options;
    const params = new URLSearchParams({
      sample_rate: String(sampleRate),
      encoding,
      interim_results: String(interimResults),
    });
    if (language) params.set('language', language);
    if (endpointingMs !== undefined) params.set('endpointing_ms', String(endpointingMs));
    if (chunkMs !== undefined) params.set('chunk_ms', String(chunkMs));
    return `${this.url}${this.url.includes('?') ? '&' : '?'}${params}`;
  }

  onMessage(data) {
    if (typeof data !== 'string') return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const now = this.options.now();
    switch (message.type) {
      case 'session': {
        const reconnected = this.sessionId !== null;
        this.sessionId = message.session_id;
        this.reconnectAttempt = 0;
        this.setState(this.stopping ? 'closing' : 'open');
        this.emit('session', {
          sessionId: message.session_id,
          sampleRate: message.sample_rate,
          encoding: message.encoding,
          reconnected,
          offsetMs: this.offsetMs,
        });
        if (this.pendingStart) {
          this.pendingStart.resolve(message.session_id);
          this.pendingStart = null;
        }
        this.drain();
        break;
      }
      case 'result': {
        const detail = {
          text: message.text,
          isFinal: message.is_final,
          confidence: message.confidence,
          stability: message.stability,
          startMs: message.start_ms,
          endMs: message.end_ms,
          segment: message.segment,
          words: message.words,
          fromFinalize: Boolean(message.from_finalize),
          offsetMs: this.offsetMs,
          latencyMs: this.latencyFor(message.end_ms, now),
        };
        this.emit(message.is_final ? 'final' : 'partial', detail);
        break;
      }
      case 'speech_started':
      case 'speech_ended':
        this.emit(message.type, { atMs: message.at_ms, offsetMs: this.offsetMs });
        break;
      case 'slow_down':
        this.slowedDown = true;
        this.emit('slow_down', { bufferedMs: message.buffered_ms });
        break;
      case 'resume':
        this.slowedDown = false;
        this.emit('resume', {});
        this.drain();
        break;
      case 'pong': {
        const sentAt = this.pings.get(message.id);
        this.pings.delete(message.id);
        this.emit('pong', { id: message.id, rttMs: sentAt === undefined ? undefined : now - sentAt });
        break;
      }
      case 'error':
        this.emit('error', { code: message.code, message: message.message });
        break;
      case 'closed':
        this.closedMessage = message;
        break;
      default:
        break;
    }
  }

  onClose(code, reason) {
    this.socket = null;
    const closed = this.closedMessage;
    if (this.pendingStart && this.sessionId === null && !this.options.reconnect) {
      this.pendingStart.reject(new Error(`connection failed (close code ${code})`));
      this.pendingStart = null;
    }
    const retryable =
      this.options.reconnect &&
      !this.stopping &&
      !FINAL_CLOSE_CODES.has(code) &&
      this.reconnectAttempt < this.options.maxReconnectAttempts;
    if (retryable) {
      this.offsetMs += this.sentMs;
      const unsent = this.outgoing;
      const unsentMs = this.outgoingMs;
      this.resetConnection();
      this.outgoing = unsent;
      this.outgoingMs = unsentMs;
      this.slowedDown = false;
      const delayMs = Math.min(
        this.options.maxBackoffMs,
        this.options.backoffMs * 2 ** this.reconnectAttempt,
      );
      this.reconnectAttempt += 1;
      this.setState('reconnecting');
      this.emit('reconnecting', {
        attempt: this.reconnectAttempt,
        delayMs,
        code,
        reason: closed?.reason ?? (reason || describeCloseCode(code)),
      });
      this.reconnectTimer = this.options.setTimeout(() => this.open(), delayMs);
      return;
    }
    if (this.pendingStart) {
      this.pendingStart.reject(new Error(`connection failed (close code ${code})`));
      this.pendingStart = null;
    }
    this.finish(closed ?? { reason: reason || describeCloseCode(code), audio_ms: this.sentMs, segments: 0 }, code);
  }

  finish(closed, code) {
    this.setState('closed');
    this.closedDetail = {
      reason: closed.reason,
      audioMs: closed.audio_ms,
      segments: closed.segments,
      code,
      offsetMs: this.offsetMs,
    };
    this.emit('closed', this.closedDetail);
  }

  /** Sends queued audio as one frame (several frames are joined while slowed down). */
  drain() {
    if (this.state !== 'open' && this.state !== 'closing') return;
    if (!this.socket || this.outgoing.length === 0) return;
    const frames = this.outgoing;
    const ms = this.outgoingMs;
    this.outgoing = [];
    this.outgoingMs = 0;
    const joined = frames.length === 1 ? frames[0] : concat(frames);
    this.socket.send(joined);
    this.sentMs += ms;
    this.sentLog.push([this.sentMs, this.options.now()]);
    if (this.sentLog.length > MAX_SENT_LOG) this.sentLog.shift();
  }

  /** Drops the oldest audio beyond `maxPendingMs` while disconnected, and says so once. */
  trimPending() {
    const frameMs = (frame) => (frame.length * 1000) / this.options.sampleRate;
    let dropped = 0;
    while (this.outgoingMs > this.options.maxPendingMs && this.outgoing.length > 1) {
      const ms = frameMs(this.outgoing.shift());
      this.outgoingMs -= ms;
      dropped += ms;
    }
    if (dropped > 0 && !this.droppedReported) {
      this.droppedReported = true;
      this.emit('error', {
        code: 'audio_dropped',
        message: `not connected for too long: audio older than ${this.options.maxPendingMs / 1000} s is being dropped`,
      });
    }
  }

  /** Milliseconds from sending the audio that holds `endMs` to now. */
  latencyFor(endMs, now) {
    if (typeof endMs !== 'number') return undefined;
    const entry = this.sentLog.find(([sentEndMs]) => sentEndMs >= endMs);
    return entry ? now - entry[1] : undefined;
  }

  sendJson(message) {
    if (this.socket && this.state !== 'closed') this.socket.send(JSON.stringify(message));
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function concat(frames) {
  const length = frames.reduce((n, frame) => n + frame.length, 0);
  const joined = new frames[0].constructor(length);
  let offset = 0;
  for (const frame of frames) {
    joined.set(frame, offset);
    offset += frame.length;
  }
  return joined;
}

/** A close code in words a person understands. */
export function describeCloseCode(code) {
  switch (code) {
    case 1000:
      return 'the session ended normally';
    case 1001:
      return 'the server is going away';
    case 1003:
      return 'the server could not understand what was sent';
    case 1006:
      return 'the connection was lost';
    case 1008:
      return 'the server refused the audio (limit reached)';
    case 1009:
      return 'a message was too large for the server';
    case 1011:
      return 'the speech engine failed';
    case 1012:
      return 'the server is restarting';
    case 1013:
      return 'the server is busy; try again shortly';
    default:
      return `the connection closed (code ${code})`;
  }
}
