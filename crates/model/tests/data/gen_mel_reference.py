#!/usr/bin/env python3
"""Regenerates mel_reference.json: numpy (float64) reference values for the mel tests.

The filters follow librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False,
norm="slaney") and the log-mel follows OpenAI Whisper's `log_mel_spectrogram`
(torch.stft centred with reflect padding, periodic Hann, |X|^2, last frame
dropped, log10 clamp, max - 8, (x + 4) / 4). Only a compact summary is stored.

Usage: python3 gen_mel_reference.py [path/to/jfk.wav] > mel_reference.json
"""
import json
import sys
import wave

import numpy as np

SR, N_FFT, HOP = 16000, 400, 160


def hz_to_mel(f):
    f = np.asanyarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-30) / min_log_hz) / logstep, mels)


def mel_to_hz(m):
    m = np.asanyarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filters(n_mels):
    fftfreqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SR)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SR / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + N_FFT // 2))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights.astype(np.float32)  # librosa's default dtype, as in Whisper's mel_filters.npz


def log_mel(audio, filters):
    audio = audio.astype(np.float64)
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n = np.arange(N_FFT)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)  # periodic Hann
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.stack([padded[i * HOP : i * HOP + N_FFT] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [frames, 201]
    power = power[:-1]  # Whisper drops the last frame
    mel = filters.astype(np.float64) @ power.T  # [n_mels, frames]
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def generated_signal(n):
    # Mirrors `generated_signal` in the Rust tests: two tones, an LCG noise floor and a silent gap.
    state = 12345
    out = np.zeros(n, dtype=np.float32)
    for i in range(n):
        state = (state * 1664525 + 1013904223) % (1 << 32)
        noise = (state >> 8) / float(1 << 24) - 0.5
        t = i / SR
        v = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.25 * np.sin(2 * np.pi * 3000.5 * t + 0.3) + 0.05 * noise
        if 8000 <= i < 10000:
            v = 0.0
        out[i] = np.float32(v)
    return out


def summary(spec, frames):
    return {
        "n_frames": int(spec.shape[1]),
        "frame_sums": [float(x) for x in spec.sum(axis=0)],
        "mel_sums": [float(x) for x in spec.sum(axis=1)],
        "frames": {str(f): [float(x) for x in spec[:, f]] for f in frames},
    }


def main():
    f80 = mel_filters(80)
    f128 = mel_filters(128)
    ref = {
        "filters": {
            # Every non-zero weight of the 80-band bank as [row, column, value]; row sums for 128.
            "nonzero_80": [[int(r), int(c), float(f80[r, c])] for r, c in zip(*np.nonzero(f80))],
            "row_sums_128": [float(x) for x in f128.astype(np.float64).sum(axis=1)],
            "row_128_100": [float(x) for x in f128[100]],
        },
    }
    sig = generated_signal(SR)
    ref["generated"] = summary(log_mel(sig, f80), [0, 1, 2, 49, 55, 60, 98, 99])
    if len(sys.argv) > 1:
        with wave.open(sys.argv[1]) as w:
            assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2
            pcm = np.frombuffer(w.readframes(SR), dtype="<i2")
        audio = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        ref["jfk_first_second"] = summary(log_mel(audio, f80), [0, 1, 2, 30, 50, 98, 99])
    json.dump(ref, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
