// Helpers for the browser tests: the real `earshot serve`, headless Chromium with a fake
// microphone playing a real recording, and word error rate.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const fixturesDir = join(repoRoot, 'tests/fixtures/speech');
/** The engine's threshold for streamed speech. */
export const MAX_WER = 0.12;

/** Reference transcripts of the bundled recordings, by file name. */
export function reference(name) {
  const refs = readFileSync(join(fixturesDir, 'refs.tsv'), 'utf8');
  for (const line of refs.split('\n')) {
    const [file, text] = line.split('\t');
    if (file === name) return text.trim();
  }
  throw new Error(`no reference for ${name}`);
}

export function wavPath(name) {
  return join(fixturesDir, 'wav', name);
}

/** Starts `earshot serve` on a free port with an in-memory store; resolves once it is ready. */
export async function startServer() {
  const bin = process.env.EARSHOT_BIN ?? join(repoRoot, 'target/release/earshot');
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--store', 'sqlite::memory:'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  const lines = createInterface({ input: child.stdout });
  const firstLine = await new Promise((resolveLine, reject) => {
    lines.once('line', resolveLine);
    child.once('exit', (code) => reject(new Error(`earshot serve exited (${code}); is the model installed? (make model)`)));
    child.once('error', reject);
  });
  // Keep reading so the server never writes into a full pipe.
  lines.on('line', () => {});
  const match = firstLine.match(/http:\/\/([^/]+)\//);
  if (!match) throw new Error(`unexpected first line from earshot serve: ${firstLine}`);
  const url = `http://${match[1]}/`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      if ((await fetch(`${url}readyz`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error('earshot serve never became ready');
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, stop: () => child.kill() };
}

/**
 * Headless Chromium whose microphone plays `wav` once (then silence). The flags are the ones
 * this machine needs: no sandbox as root, and no background networking (there is no network).
 */
export function launchBrowser(wav) {
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
  ];
  if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}%noloop`);
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args,
  });
}

/** Lower-case words without punctuation. */
export function words(text) {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9' ]+/g, ' ')
    .split(/\s+/)
    .filter(Boolean);
}

/** Word error rate of `hypothesis` against `reference` (Levenshtein over words). */
export function wordErrorRate(referenceText, hypothesisText) {
  const ref = words(referenceText);
  const hyp = words(hypothesisText);
  let previous = Array.from({ length: hyp.length + 1 }, (_, j) => j);
  for (let i = 1; i <= ref.length; i++) {
    const current = [i];
    for (let j = 1; j <= hyp.length; j++) {
      const substitution = previous[j - 1] + (ref[i - 1] === hyp[j - 1] ? 0 : 1);
      current[j] = Math.min(substitution, previous[j] + 1, current[j - 1] + 1);
    }
    previous = current;
  }
  return ref.length === 0 ? (hyp.length === 0 ? 0 : 1) : previous[hyp.length] / ref.length;
}

/** Polls `read` until `accept` holds for its value; returns the value. */
export async function waitFor(read, accept, { timeoutMs = 60_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value;
  for (;;) {
    value = await read();
    if (accept(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
