import { test } from 'node:test';
import assert from 'node:assert/strict';

import { EarshotClient, describeCloseCode } from '../earshot-client.js';

/** A WebSocket stand-in: records what the client sends; the test plays the server. */
class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    FakeSocket.instances.push(this);
  }

  send(data) {
    this.sent.push(data);
  }

  serverSays(message) {
    this.onmessage({ data: JSON.stringify(message) });
  }

  serverCloses(code, reason = '') {
    this.onclose({ code, reason });
  }

  audio() {
    return this.sent.filter((data) => typeof data !== 'string');
  }

  texts() {
    return this.sent.filter((data) => typeof data === 'string').map((text) => JSON.parse(text));
  }
}

/** A client on fake sockets and a fake clock; timers run only when the test says so. */
function makeClient(options = {}) {
  FakeSocket.instances = [];
  const clock = { now: 0, timers: [] };
  const client = new EarshotClient('ws://gateway/v1/stt', {
    WebSocket: FakeSocket,
    now: () => clock.now,
    setTimeout: (fn, ms) => clock.timers.push({ fn, ms }),
    clearTimeout: () => {},
    ...options,
  });
  const events = [];
  for (const type of ['state', 'session', 'partial', 'final', 'slow_down', 'resume', 'error', 'closed', 'reconnecting', 'pong', 'speech_started']) {
    client.addEventListener(type, (event) => events.push({ type, ...event.detail }));
  }
  const runTimers = () => {
    const due = clock.timers.splice(0);
    for (const timer of due) timer.fn();
    return due.map((timer) => timer.ms);
  };
  return { client, clock, events, runTimers, socket: () => FakeSocket.instances.at(-1) };
}

const frame = (ms, value = 1) => new Int16Array((16 * ms)).fill(value);

async function started(setup) {
  const promise = setup.client.start();
  setup.socket().serverSays({ type: 'session', session_id: 's1', sample_rate: 16000, encoding: 'pcm_s16le' });
  assert.equal(await promise, 's1');
}

test('the query names the stream parameters', () => {
  const { client, socket } = makeClient({ language: 'en', endpointingMs: 300, chunkMs: 200, interimResults: false });
  client.start();
  const url = new URL(socket().url);
  assert.equal(url.pathname, '/v1/stt');
  assert.equal(url.searchParams.get('sample_rate'), '16000');
  assert.equal(url.searchParams.get('encoding'), 'pcm_s16le');
  assert.equal(url.searchParams.get('interim_results'), 'false');
  assert.equal(url.searchParams.get('language'), 'en');
  assert.equal(url.searchParams.get('endpointing_ms'), '300');
  assert.equal(url.searchParams.get('chunk_ms'), '200');
});

test('audio waits for the session, then goes out frame by frame', async () => {
  const setup = makeClient();
  const promise = setup.client.start();
  setup.client.sendAudio(frame(100));
  assert.equal(setup.socket().audio().length, 0);
  setup.socket().serverSays({ type: 'session', session_id: 's1', sample_rate: 16000, encoding: 'pcm_s16le' });
  await promise;
  assert.equal(setup.socket().audio().length, 1);
  setup.client.sendAudio(frame(100));
  assert.equal(setup.socket().audio().length, 2);
});

test('results become partial and final events with their latency', async () => {
  const setup = makeClient();
  await started(setup);
  setup.clock.now = 1000;
  setup.client.sendAudio(frame(100));
  setup.clock.now = 1100;
  setup.client.sendAudio(frame(100));
  setup.clock.now = 1250;
  setup.socket().serverSays({ type: 'result', text: 'hel', is_final: false, confidence: 0.5, stability: 0.4, start_ms: 0, end_ms: 150, segment: 0 });
  setup.socket().serverSays({ type: 'result', text: 'hello', is_final: true, confidence: 0.9, start_ms: 0, end_ms: 200, segment: 0, words: [{ word: 'hello', start_ms: 0, end_ms: 200, confidence: 0.9 }] });
  const partial = setup.events.find((e) => e.type === 'partial');
  const final = setup.events.find((e) => e.type === 'final');
  assert.equal(partial.text, 'hel');
  assert.equal(partial.stability, 0.4);
  // end_ms 150 is in the second frame, sent at 1100.
  assert.equal(partial.latencyMs, 150);
  assert.equal(final.text, 'hello');
  assert.equal(final.words.length, 1);
  assert.equal(final.latencyMs, 150);
});

test('slow_down joins frames into larger, less frequent ones; resume goes back', async () => {
  const setup = makeClient({ slowFrameMs: 500 });
  await started(setup);
  setup.socket().serverSays({ type: 'slow_down', buffered_ms: 2100 });
  for (let i = 0; i < 4; i++) setup.client.sendAudio(frame(100));
  assert.equal(setup.socket().audio().length, 0, 'held back while slowed down');
  setup.client.sendAudio(frame(100));
  const sent = setup.socket().audio();
  assert.equal(sent.length, 1);
  assert.equal(sent[0].length, 16 * 500, 'one 500 ms frame');
  setup.client.sendAudio(frame(100));
  setup.socket().serverSays({ type: 'resume' });
  assert.equal(setup.socket().audio().length, 2, 'held audio is sent on resume');
  setup.client.sendAudio(frame(100));
  assert.equal(setup.socket().audio().length, 3, 'back to one frame per call');
  assert.deepEqual(setup.events.filter((e) => e.type === 'slow_down').map((e) => e.bufferedMs), [2100]);
});

test('stop sends what is queued, then close, and resolves with the closed message', async () => {
  const setup = makeClient();
  await started(setup);
  setup.socket().serverSays({ type: 'slow_down', buffered_ms: 2000 });
  setup.client.sendAudio(frame(100));
  const stopping = setup.client.stop();
  const socket = setup.socket();
  assert.equal(socket.audio().length, 1, 'queued audio flushed first');
  assert.deepEqual(socket.texts().at(-1), { type: 'close' });
  assert.equal(setup.client.state, 'closing');
  socket.serverSays({ type: 'result', text: 'last words', is_final: true, end_ms: 100 });
  socket.serverSays({ type: 'closed', reason: 'normal', audio_ms: 100, segments: 1 });
  socket.serverCloses(1000);
  const closed = await stopping;
  assert.equal(closed.reason, 'normal');
  assert.equal(closed.code, 1000);
  assert.equal(setup.client.state, 'closed');
  assert.ok(setup.events.some((e) => e.type === 'final' && e.text === 'last words'));
});

test('a dropped connection is retried with growing backoff, keeping the audio meanwhile', async () => {
  const setup = makeClient({ backoffMs: 500 });
  await started(setup);
  setup.client.sendAudio(frame(100));
  setup.socket().serverCloses(1006);
  assert.equal(setup.client.state, 'reconnecting');
  setup.client.sendAudio(frame(100, 7));
  // The first retry fails too (the server is still down).
  assert.deepEqual(setup.runTimers(), [500]);
  setup.socket().serverCloses(1006);
  assert.deepEqual(setup.runTimers(), [1000]);
  const socket = setup.socket();
  socket.serverSays({ type: 'session', session_id: 's2', sample_rate: 16000, encoding: 'pcm_s16le' });
  assert.equal(setup.client.state, 'open');
  assert.equal(socket.audio().length, 1, 'audio captured while disconnected is sent');
  assert.equal(socket.audio()[0][0], 7);
  const reconnects = setup.events.filter((e) => e.type === 'reconnecting');
  assert.deepEqual(reconnects.map((e) => [e.attempt, e.delayMs]), [[1, 500], [2, 1000]]);
  assert.equal(reconnects[0].reason, 'the connection was lost');
  const sessions = setup.events.filter((e) => e.type === 'session');
  assert.equal(sessions[1].reconnected, true);
  assert.equal(sessions[1].offsetMs, 100, 'the new session continues the timeline');
});

test('engine failure and overload are retried; refused input is not', async () => {
  for (const [code, retried] of [[1011, true], [1013, true], [1012, true], [1008, false], [1003, false], [1000, false]]) {
    const setup = makeClient();
    await started(setup);
    setup.socket().serverSays({ type: 'closed', reason: 'x', audio_ms: 0, segments: 0 });
    setup.socket().serverCloses(code);
    assert.equal(setup.client.state, retried ? 'reconnecting' : 'closed', `close code ${code}`);
  }
});

test('reconnection gives up after the last attempt and says why', async () => {
  const setup = makeClient({ maxReconnectAttempts: 2 });
  await started(setup);
  setup.socket().serverCloses(1006);
  setup.runTimers();
  setup.socket().serverCloses(1006);
  setup.runTimers();
  setup.socket().serverCloses(1006);
  assert.equal(setup.client.state, 'closed');
  const closed = setup.events.find((e) => e.type === 'closed');
  assert.equal(closed.reason, 'the connection was lost');
  assert.equal(closed.code, 1006);
});

test('audio beyond the pending limit is dropped while disconnected, and reported once', async () => {
  const setup = makeClient({ maxPendingMs: 300 });
  await started(setup);
  setup.socket().serverCloses(1006);
  for (let i = 0; i < 6; i++) setup.client.sendAudio(frame(100));
  const errors = setup.events.filter((e) => e.type === 'error');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'audio_dropped');
  assert.ok(setup.client.outgoingMs <= 300);
});

test('errors, pongs and speech events are passed on', async () => {
  const setup = makeClient();
  await started(setup);
  setup.clock.now = 10;
  setup.client.ping(42);
  setup.clock.now = 35;
  setup.socket().serverSays({ type: 'pong', id: 42 });
  setup.socket().serverSays({ type: 'speech_started', at_ms: 320 });
  setup.socket().serverSays({ type: 'error', code: 'invalid_audio', message: 'odd byte count' });
  assert.deepEqual(setup.socket().texts()[0], { type: 'ping', id: 42 });
  assert.equal(setup.events.find((e) => e.type === 'pong').rttMs, 25);
  assert.equal(setup.events.find((e) => e.type === 'speech_started').atMs, 320);
  assert.equal(setup.events.find((e) => e.type === 'error').code, 'invalid_audio');
});

test('a failed first connection rejects start when reconnecting is off', async () => {
  const setup = makeClient({ reconnect: false });
  const promise = setup.client.start();
  setup.socket().serverCloses(1006);
  await assert.rejects(promise, /close code 1006/);
});

test('close codes are described in words', () => {
  assert.match(describeCloseCode(1013), /busy/);
  assert.match(describeCloseCode(1011), /engine/);
  assert.match(describeCloseCode(4999), /4999/);
});
