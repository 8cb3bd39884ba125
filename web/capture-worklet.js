// AudioWorklet processor: whatever rate the device runs at (usually 48 kHz) in, 16 kHz mono
// 16-bit PCM frames of about 100 ms out, posted to the main thread with their level. All
// per-sample work happens here, on the audio rendering thread.

import { Resampler, floatSampleToInt16 } from './dsp.js';

const TARGET_RATE = 16000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = options?.processorOptions?.frameMs ?? 100;
    this.frameSamples = Math.round((TARGET_RATE * frameMs) / 1000);
    // `sampleRate` is the AudioContext's rate, a global of the worklet scope.
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.startFrame();
    this.port.onmessage = (event) => {
      if (event.data?.type === 'flush') {
        this.push(this.resampler.flush());
        this.postFrame();
        this.port.postMessage({ type: 'flushed' });
      }
    };
  }

  startFrame() {
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    let mono = channels[0];
    if (channels.length > 1) {
      // Average the channels; a stereo microphone is still one speaker.
      mono = new Float32Array(channels[0].length);
      for (const channel of channels) {
        for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
      }
    }
    this.push(this.resampler.process(mono));
    return true;
  }

  push(samples) {
    for (let i = 0; i < samples.length; i++) {
      const sample = samples[i];
      this.frame[this.filled++] = floatSampleToInt16(sample);
      this.sumSquares += sample * sample;
      const magnitude = Math.abs(sample);
      if (magnitude > this.peak) this.peak = magnitude;
      if (this.filled === this.frameSamples) this.postFrame();
    }
  }

  postFrame() {
    if (this.filled === 0) return;
    const pcm = this.filled === this.frameSamples ? this.frame : this.frame.slice(0, this.filled);
    const level = Math.sqrt(this.sumSquares / this.filled);
    this.port.postMessage({ type: 'frame', pcm, level, peak: this.peak }, [pcm.buffer]);
    this.startFrame();
  }
}

registerProcessor('earshot-capture', CaptureProcessor);
