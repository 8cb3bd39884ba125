// The page end to end in real headless Chromium, against the real `earshot serve` with the real
// model: a fake microphone plays a real recording; the page must show partials, then finals
// whose word error rate passes the engine's threshold; Stop ends with `closed`; the session is
// listed with its transcript. Set EARSHOT_SCREENSHOT=PATH to save a screenshot mid-sentence.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  MAX_WER,
  launchBrowser,
  reference,
  startServer,
  waitFor,
  wavPath,
  wordErrorRate,
} from './support.js';

let server;

before(async () => {
  server = await startServer();
});

after(() => server?.stop());

const finalsText = (page) =>
  page.$$eval('#finals .final .text', (items) => items.map((item) => item.textContent).join(' '));

test('speaking into the microphone shows partials, then finals; Stop ends the session', { timeout: 180_000 }, async () => {
  const browser = await launchBrowser(wavPath('jfk.wav'));
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
    const consoleErrors = [];
    page.on('console', (message) => message.type() === 'error' && consoleErrors.push(message.text()));
    page.on('pageerror', (error) => consoleErrors.push(String(error)));
    await page.goto(server.url);
    await page.click('#start');
    await page.waitForSelector('#state[data-state="open"]');
    const sessionId = (await page.textContent('#session-id')).trim();
    assert.match(sessionId, /^[0-9a-f-]{36}$/);

    // Partial text appears while the recording plays.
    await page.waitForFunction(() => document.querySelector('#partial').textContent.trim().length > 0, null, { timeout: 60_000 });
    // A final with a partial after it: mid-sentence, for the screenshot.
    await page
      .waitForFunction(
        () =>
          document.querySelectorAll('#finals .final').length > 0 &&
          document.querySelector('#partial').textContent.trim().split(/\s+/).length >= 3,
        null,
        { timeout: 15_000 },
      )
      .catch(() => {});
    if (process.env.EARSHOT_SCREENSHOT) await page.screenshot({ path: process.env.EARSHOT_SCREENSHOT });
    assert.ok(
      Number.parseInt(await page.textContent('#latency'), 10) > 0,
      'the live latency is shown',
    );
    const levelWidth = await page.$eval('#level', (level) => Number.parseFloat(level.style.width));
    assert.ok(levelWidth >= 0);

    // Wait for the whole recording to come back as finals.
    const expected = reference('jfk.wav');
    await waitFor(() => finalsText(page), (text) => wordErrorRate(expected, text) < MAX_WER, {
      what: 'the finals of the recording',
    });
    await page.click('#stop');
    await page.waitForSelector('#state[data-state="closed"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('#notice', 'data-close-reason'), 'normal');
    const text = await finalsText(page);
    const wer = wordErrorRate(expected, text);
    console.log(`microphone: WER ${(100 * wer).toFixed(1)}% — ${text}`);
    assert.ok(wer < MAX_WER, text);
    assert.ok(await page.isEnabled('#start'), 'Start is available again');
    const times = await page.$$eval('#finals .final .time', (items) => items.map((item) => item.textContent));
    assert.match(times[0], /^\d\d:\d\d\.\d$/);

    // The session is listed, and its stored transcript can be opened.
    await page.waitForSelector(`#sessions li[data-session-id="${sessionId}"]`);
    await page.click(`#sessions li[data-session-id="${sessionId}"]`);
    await page.waitForSelector(`#session-view[data-session-id="${sessionId}"]:not([hidden])`);
    const stored = await page.textContent('#session-text');
    assert.ok(wordErrorRate(expected, stored.replace(/\[[\d:.]+\]/g, '')) < MAX_WER, stored);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});

test('a WAV file streams through the same path at real-time pace', { timeout: 180_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(server.url);
    const started = Date.now();
    await page.setInputFiles('#upload', wavPath('lv_austen-0870.wav'));
    await page.waitForSelector('#state[data-state="open"]');
    // The page stops by itself at the end of the file and waits for the last finals.
    await page.waitForSelector('#state[data-state="closed"]', { timeout: 120_000 });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 7000, `7.1 s of audio took ${elapsed} ms: real-time pace`);
    assert.equal(await page.getAttribute('#notice', 'data-close-reason'), 'normal');
    const text = await finalsText(page);
    const wer = wordErrorRate(reference('lv_austen-0870.wav'), text);
    console.log(`upload: WER ${(100 * wer).toFixed(1)}% — ${text}`);
    assert.ok(wer < MAX_WER, text);
  } finally {
    await browser.close();
  }
});

test('the minimal client (raw Int16 frames, text and is_final only) still works', { timeout: 180_000 }, async () => {
  const browser = await launchBrowser(wavPath('jfk.wav'));
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}seed-client.html`);
    await page.click('#start');
    const expected = reference('jfk.wav');
    const text = await waitFor(
      () => page.textContent('#final'),
      (value) => wordErrorRate(expected, value) < MAX_WER,
      { what: 'the minimal client to show the finals' },
    );
    console.log(`minimal client: ${text}`);
    // It ends by closing the socket; the session is still stored in full.
    await page.click('#stop');
    await page.waitForFunction(() => document.querySelector('#status').textContent === 'closed');
    const session = await waitFor(
      async () => (await (await fetch(`${server.url}v1/sessions?limit=50`)).json()).sessions,
      (sessions) => sessions.some((s) => s.close_reason === 'client_closed'),
      { what: 'the minimal client session to be stored' },
    );
    const stored = session.find((s) => s.close_reason === 'client_closed');
    assert.equal(stored.status, 'completed');
    const detail = await (await fetch(`${server.url}v1/sessions/${stored.id}`)).json();
    const storedText = detail.segments.map((s) => s.text).join(' ');
    assert.ok(wordErrorRate(expected, storedText) < MAX_WER, storedText);
  } finally {
    await browser.close();
  }
});
