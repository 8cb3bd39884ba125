import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Resampler, floatSampleToInt16, floatToInt16, rms } from '../dsp.js';

function sine(frequency, rate, seconds, amplitude = 0.5) {
  const samples = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < samples.length; i++) {
    samples[i] = amplitude * Math.sin((2 * Math.PI * frequency * i) / rate);
  }
  return samples;
}

/** Resamples `input` in blocks of `block` samples, as the worklet does (128 per call). */
function resampleInBlocks(resampler, input, block = 128) {
  const parts = [];
  for (let start = 0; start < input.length; start += block) {
    parts.push(resampler.process(input.subarray(start, start + block)));
  }
  parts.push(resampler.flush());
  const output = new Float32Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    output.set(part, offset);
    offset += part.length;
  }
  return output;
}

/** Amplitude of `frequency` in `samples` (a single-bin DFT), ignoring the edges. */
function amplitudeAt(samples, frequency, rate) {
  const skip = Math.floor(samples.length / 10);
  let re = 0;
  let im = 0;
  let n = 0;
  for (let i = skip; i < samples.length - skip; i++, n++) {
    const phase = (2 * Math.PI * frequency * i) / rate;
    re += samples[i] * Math.cos(phase);
    im += samples[i] * Math.sin(phase);
  }
  return (2 * Math.hypot(re, im)) / n;
}

test('int16 conversion maps the full scale and clips beyond ±1.0', () => {
  assert.equal(floatSampleToInt16(0), 0);
  assert.equal(floatSampleToInt16(1), 32767);
  assert.equal(floatSampleToInt16(-1), -32768);
  assert.equal(floatSampleToInt16(0.5), 16384);
  assert.equal(floatSampleToInt16(-0.5), -16384);
  assert.equal(floatSampleToInt16(1.5), 32767);
  assert.equal(floatSampleToInt16(-7), -32768);
  assert.equal(floatSampleToInt16(Infinity), 32767);
  assert.equal(floatSampleToInt16(-Infinity), -32768);
  assert.equal(floatSampleToInt16(NaN), 0);
});

test('int16 conversion of a block fills the given array', () => {
  const output = new Int16Array(4);
  const result = floatToInt16(new Float32Array([0.25, -0.25, 2, -2]), output);
  assert.equal(result, output);
  assert.deepEqual(Array.from(output), [8192, -8192, 32767, -32768]);
});

test('rms of a full-scale sine is 1/√2', () => {
  assert.ok(Math.abs(rms(sine(440, 16000, 1, 1)) - Math.SQRT1_2) < 1e-3);
  assert.equal(rms(new Float32Array(0)), 0);
});

for (const inRate of [48000, 44100, 32000, 22050, 16000, 8000]) {
  test(`resampling ${inRate} Hz to 16 kHz gives the right length and keeps a 1 kHz tone`, () => {
    const seconds = 2;
    const input = sine(1000, inRate, seconds);
    const output = resampleInBlocks(new Resampler(inRate, 16000), input);
    assert.equal(output.length, Math.ceil((input.length * 16000) / inRate));
    const amplitude = amplitudeAt(output, 1000, 16000);
    assert.ok(Math.abs(amplitude - 0.5) < 0.01, `amplitude ${amplitude}`);
  });
}

test('downsampling removes content above the new Nyquist frequency (no aliasing)', () => {
  // 12 kHz at 48 kHz would alias to 4 kHz at 16 kHz without the low-pass filter.
  const output = resampleInBlocks(new Resampler(48000, 16000), sine(12000, 48000, 1));
  const aliased = amplitudeAt(output, 4000, 16000);
  assert.ok(aliased < 0.5 * 10 ** (-60 / 20), `alias at 4 kHz: ${aliased}`);
  // 9 kHz would fold to 7 kHz.
  const folded = resampleInBlocks(new Resampler(48000, 16000), sine(9000, 48000, 1));
  assert.ok(amplitudeAt(folded, 7000, 16000) < 0.5 * 10 ** (-40 / 20));
});

test('the passband up to 6 kHz is kept within 0.5 dB', () => {
  for (const frequency of [100, 1000, 3000, 5000, 6000]) {
    const output = resampleInBlocks(new Resampler(48000, 16000), sine(frequency, 48000, 1));
    const gainDb = 20 * Math.log10(amplitudeAt(output, frequency, 16000) / 0.5);
    assert.ok(Math.abs(gainDb) < 0.5, `${frequency} Hz: ${gainDb.toFixed(2)} dB`);
  }
});

test('the output is not delayed: an impulse stays at its time', () => {
  const input = new Float32Array(48000);
  input[24000] = 1;
  const output = resampleInBlocks(new Resampler(48000, 16000), input);
  let peak = 0;
  for (let i = 1; i < output.length; i++) if (Math.abs(output[i]) > Math.abs(output[peak])) peak = i;
  assert.equal(peak, 8000);
});

test('block size does not change the result', () => {
  const input = sine(440, 44100, 0.5);
  const whole = resampleInBlocks(new Resampler(44100, 16000), input, input.length);
  const small = resampleInBlocks(new Resampler(44100, 16000), input, 128);
  const odd = resampleInBlocks(new Resampler(44100, 16000), input, 37);
  assert.equal(small.length, whole.length);
  assert.equal(odd.length, whole.length);
  for (let i = 0; i < whole.length; i++) {
    assert.ok(Math.abs(small[i] - whole[i]) < 1e-5);
    assert.ok(Math.abs(odd[i] - whole[i]) < 1e-5);
  }
});

test('invalid rates are refused', () => {
  assert.throws(() => new Resampler(0, 16000), RangeError);
  assert.throws(() => new Resampler(48000, -1), RangeError);
});
