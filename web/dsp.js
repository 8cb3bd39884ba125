// Audio conversion for the capture worklet, kept free of browser APIs so that `node --test`
// runs the same code: a streaming low-pass resampler and Float32 -> Int16 conversion.

/** Converts one sample in [-1, 1] to 16-bit PCM; out-of-range values clip, NaN becomes 0. */
export function floatSampleToInt16(sample) {
  if (!(sample > -1)) return sample <= -1 ? -32768 : 0;
  if (sample >= 1) return 32767;
  return Math.round(sample < 0 ? sample * 32768 : sample * 32767);
}

/** Converts Float32 samples to a new (or the given) Int16Array. */
export function floatToInt16(input, output = new Int16Array(input.length)) {
  for (let i = 0; i < input.length; i++) output[i] = floatSampleToInt16(input[i]);
  return output;
}

/** Root mean square of a block of samples in [-1, 1] (0 for an empty block). */
export function rms(samples) {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return Math.sqrt(sum / samples.length);
}

/** Kernel table resolution: entries per input sample. */
const TABLE_STEPS = 64;

/**
 * Streaming sample-rate converter with a Blackman-windowed sinc low-pass filter.
 *
 * Downsampling (48 kHz -> 16 kHz, the usual microphone case) needs the filter: without it,
 * everything between 8 and 24 kHz folds back into the speech band. The cutoff sits a little
 * below the output Nyquist frequency. Output sample n is the filtered input at time
 * n * inRate / outRate, so the stream is not delayed; `flush()` returns the tail.
 */
export class Resampler {
  /**
   * @param {number} inRate input sample rate in Hz
   * @param {number} outRate output sample rate in Hz
   * @param {{zeroCrossings?: number, cutoff?: number}} options filter length (zero crossings on
   *   each side) and cutoff as a fraction of the lower Nyquist frequency
   */
  constructor(inRate, outRate = 16000, { zeroCrossings = 16, cutoff = 0.9 } = {}) {
    if (!(inRate > 0) || !(outRate > 0)) {
      throw new RangeError(`sample rates must be positive, got ${inRate} and ${outRate}`);
    }
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate;
    // Cutoff in cycles per input sample, times two (1 = input Nyquist).
    this.cutoff = Math.min(1, outRate / inRate) * cutoff;
    this.halfWidth = Math.ceil(zeroCrossings / this.cutoff);
    this.table = kernelTable(this.cutoff, this.halfWidth);
    // Pending input, starting with zeros so that the first output is centred on input 0.
    this.buffer = new Float32Array(this.halfWidth);
    // Samples dropped from the front of `buffer` so far, outputs produced, inputs taken.
    // Positions are recomputed from these counts, so rounding never accumulates.
    this.dropped = 0;
    this.produced = 0;
    this.consumed = 0;
  }

  /** Position of output `n` in `buffer`, in input samples. */
  positionOf(n) {
    return this.halfWidth + n * this.step - this.dropped;
  }

  /** Takes the next block of input; returns the output samples it completes. */
  process(input) {
    this.consumed += input.length;
    return this.take(input, Infinity);
  }

  /** Ends the stream: returns the outputs still owed for the input given so far. */
  flush() {
    const owed = Math.ceil((this.consumed * this.outRate) / this.inRate - 1e-9) - this.produced;
    return this.take(new Float32Array(this.halfWidth + 1), Math.max(0, owed));
  }

  take(input, limit) {
    const buffer = new Float32Array(this.buffer.length + input.length);
    buffer.set(this.buffer);
    buffer.set(input, this.buffer.length);
    // Output n needs input up to floor(position + halfWidth).
    const last = buffer.length - 1 - this.halfWidth;
    const first = this.produced;
    let end = first;
    while (end - first < limit && this.positionOf(end) <= last) end++;
    const output = new Float32Array(end - first);
    for (let n = first; n < end; n++) output[n - first] = this.filterAt(buffer, this.positionOf(n));
    this.produced = end;
    // Keep only what later outputs still need.
    const keepFrom = Math.max(0, Math.floor(this.positionOf(end)) - this.halfWidth);
    this.buffer = buffer.slice(keepFrom);
    this.dropped += keepFrom;
    return output;
  }

  filterAt(buffer, position) {
    const halfWidth = this.halfWidth;
    const first = Math.ceil(position - halfWidth);
    const last = Math.floor(position + halfWidth);
    const table = this.table;
    let sum = 0;
    for (let k = first; k <= last; k++) {
      // Kernel argument k - position in [-halfWidth, halfWidth], as a table index.
      const x = (k - position + halfWidth) * TABLE_STEPS;
      const i = Math.floor(x);
      const frac = x - i;
      const weight = table[i] + (table[i + 1] - table[i]) * frac;
      sum += buffer[k] * weight;
    }
    return sum;
  }
}

/** The windowed sinc sampled every 1/TABLE_STEPS input samples over [-halfWidth, halfWidth]. */
function kernelTable(cutoff, halfWidth) {
  const size = 2 * halfWidth * TABLE_STEPS + 2;
  const table = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const x = i / TABLE_STEPS - halfWidth;
    if (Math.abs(x) > halfWidth) continue;
    const sinc = x === 0 ? cutoff : Math.sin(Math.PI * cutoff * x) / (Math.PI * x);
    const phase = (Math.PI * x) / halfWidth;
    const window = 0.42 + 0.5 * Math.cos(phase) + 0.08 * Math.cos(2 * phase);
    table[i] = sinc * window;
  }
  return table;
}
