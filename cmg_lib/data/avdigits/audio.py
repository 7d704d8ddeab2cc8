"""Audio bank of AV-Digits: digit words spoken by espeak-ng, placed in 1-s segments with noise, as log-mel summaries.

Stands in for VGGish: upstream feeds one 128-d VGGish vector per ~1-s segment (book/official_data.md). Here each
bank entry is a 1-s, 16 kHz clip (an utterance at a random offset plus background noise, or noise alone, or an
off-screen non-digit word) summarised by a 64-band log-mel spectrogram (25 ms window, 10 ms hop) reduced to 128
numbers: per-band mean and standard deviation over time. Voice variant x pitch x rate x pitch range is the
speaker identity, i.e. the audio's modality-specific information.

espeak-ng (through the ``espeakng-loader`` wheel, ctypes, synchronous mode 2) keeps internal state between
utterances, so byte-identical output needs a fixed synthesis order in a fresh process: :func:`synthesize_bank` runs
the whole list in one new Python process.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy.signal import resample_poly, stft

SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
N_MELS = 64
N_FFT = 400          # 25 ms at 16 kHz
HOP = 160            # 10 ms
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
OFFSCREEN_WORDS = ("hmm", "okay", "yes", "hello", "well", "right")
# Voice variants that sound like a person speaking; the others (whispers, robots, klatt formant voices) are kept as
# the second domain of the ucf_vgg pair.
ODD_VOICES = ("whisper", "whisperf", "croak", "Demonic", "Storm", "UniRobot", "Tweaky", "anikaRobot", "klatt",
              "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "robosoft", "robosoft2", "robosoft3", "robosoft4",
              "robosoft5", "robosoft6", "robosoft7", "robosoft8")


def list_voices() -> tuple[list[str], list[str]]:
    """(human-like variants, odd variants) available in the installed espeak-ng data, sorted by name."""
    import os

    import espeakng_loader

    names = sorted(n for n in os.listdir(os.path.join(espeakng_loader.get_data_path(), "voices", "!v"))
                   if " " not in n)
    odd = [n for n in names if n in ODD_VOICES]
    human = [n for n in names if n not in ODD_VOICES]
    return human, odd


class _Espeak:
    """Minimal ctypes binding of libespeak-ng in synchronous mode (one instance per process)."""

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self.chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0 and wav:
                self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(collect)  # keep a reference alive for the library
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng initialised at {rate} Hz, expected {ESPEAK_RATE}")
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def say(self, word: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        self.chunks.clear()
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(0))      # espeak seeds its jitter from the clock otherwise
        if self.lib.espeak_SetVoiceByName(f"en+{voice}".encode()) != 0:
            raise ValueError(f"espeak-ng has no voice variant {voice!r}")
        self.lib.espeak_SetParameter(1, int(rate), 0)
        self.lib.espeak_SetParameter(3, int(pitch), 0)
        self.lib.espeak_SetParameter(4, int(pitch_range), 0)
        text = word.encode() + b"\0"
        if self.lib.espeak_Synth(text, len(text), 0, 0, 0, 0, None, None) != 0:
            raise RuntimeError(f"espeak-ng failed on {word!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


def _synthesize_in_this_process(jobs: list[tuple[str, str, int, int, int]]) -> list[np.ndarray]:
    engine = _Espeak()
    out = []
    for word, voice, rate, pitch, prange in jobs:
        wav = engine.say(word, voice, rate, pitch, prange).astype(np.float32) / 32768.0
        out.append(resample_poly(wav, 320, 441).astype(np.float32))      # 22.05 kHz -> 16 kHz
    return out


def synthesize_bank(jobs: list[tuple[str, str, int, int, int]]) -> list[np.ndarray]:
    """Speak ``(word, voice, rate, pitch, pitch_range)`` jobs in order in a fresh Python process; 16 kHz float32.

    A new interpreter (``python -m cmg_lib.data.avdigits.audio``) rather than a multiprocessing pool: the result does
    not depend on what this process synthesised before, and the caller's main module is never re-imported.
    """
    if not jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="cmg-espeak-") as tmp:
        job_file, out_file = os.path.join(tmp, "jobs.json"), os.path.join(tmp, "waves.npz")
        with open(job_file, "w") as f:
            json.dump([list(j) for j in jobs], f)
        proc = subprocess.run([sys.executable, "-m", __name__, job_file, out_file], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
        with np.load(out_file) as data:
            flat, lengths = data["flat"], data["lengths"]
    return np.split(flat, np.cumsum(lengths)[:-1])


def _worker_main(job_file: str, out_file: str) -> None:
    with open(job_file) as f:
        jobs = [tuple(j) for j in json.load(f)]
    waves = _synthesize_in_this_process(jobs)
    np.savez(out_file, flat=np.concatenate(waves), lengths=np.asarray([w.size for w in waves], np.int64))


def trim_silence(wav: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``threshold`` (espeak pads words with silence)."""
    loud = np.flatnonzero(np.abs(wav) > threshold)
    if loud.size == 0:
        return wav[:0]
    return wav[loud[0]: loud[-1] + 1]


def make_noise(rng: np.random.Generator, kind: str, level: float, n: int = SAMPLE_RATE) -> np.ndarray:
    """Background noise: ``pink`` (room-like, 1/f) or ``hum`` (mains hum plus hiss: the second domain)."""
    if kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0
        x = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        x = np.sin(2 * np.pi * 100 * t + rng.uniform(0, 2 * np.pi)) + 0.5 * np.sin(2 * np.pi * 300 * t)
        x = x + 0.7 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected 'pink' or 'hum'")
    x = x / (np.std(x) + 1e-12)
    return (level * x).astype(np.float32)


def compose_segment(utterance: np.ndarray, offset: int, gain: float, noise: np.ndarray) -> np.ndarray:
    """One 1-s segment: the utterance scaled by ``gain`` starting at sample ``offset``, over ``noise``."""
    seg = noise.astype(np.float32).copy()
    n = min(utterance.size, seg.size - offset)
    seg[offset: offset + n] += gain * utterance[:n]
    return seg


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """HTK-style triangular mel filterbank, shape (n_mels, n_fft // 2 + 1)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(segments: np.ndarray) -> np.ndarray:
    """Log-mel spectrograms of 1-s segments: (N, 16000) -> (N, 64, frames)."""
    _, _, spec = stft(segments, fs=SAMPLE_RATE, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP,
                      boundary=None, padded=False, axis=-1)
    power = (np.abs(spec) ** 2).astype(np.float32)                        # (N, 201, frames)
    return np.log(np.einsum("mf,nft->nmt", mel_filterbank(), power) + 1e-6)


def segment_features(segments: np.ndarray, batch: int = 512) -> np.ndarray:
    """128-d summary per 1-s segment: per-band mean and std of the log-mel over time (float32)."""
    out = []
    for start in range(0, len(segments), batch):
        spec = log_mel(segments[start: start + batch])
        out.append(np.concatenate([spec.mean(-1), spec.std(-1)], axis=1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2 * N_MELS), np.float32)


if __name__ == "__main__":
    _worker_main(sys.argv[1], sys.argv[2])
