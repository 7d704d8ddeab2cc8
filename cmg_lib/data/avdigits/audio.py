"""Audio signals of AV-Digits: words spoken by espeak-ng in a room, mixed per segment with noise, as log-mel.

Each 1-s, 16 kHz segment is composed fresh: up to two word utterances of one voice (a number is its tens word, a
short pause, its unit word) at a fresh offset and gain, over a fresh window of a 3-s noise recording (pink, brown or
babble of other speech; mains hum for the second domain) at a fresh speech-to-noise ratio. The utterances come from
a bank of (voice, word, prosody) renderings, each convolved with its own synthetic room response. Voice variant x
pitch x rate x pitch range, room, noise and level are the audio's modality-specific information.

Mixing happens frame by frame (offsets are whole 10-ms hops, so each source's frames are exactly its STFT frames in
the mixed waveform): :func:`mix_log_mel` adds the stored mel power of the word and noise frames (the cross terms,
zero in expectation, are left out), so no per-segment FFT is needed, and :func:`compose_waveform` gives the waveform
for listening. Features (``extractors.AudioNet``) are computed
from these 64-band log-mel spectrograms (25 ms window, 10 ms hop).

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


def synthesize_bank(jobs: list[tuple[str, str, int, int, int]], workers: int = 2) -> list[np.ndarray]:
    """Speak ``(word, voice, rate, pitch, pitch_range)`` jobs in fresh Python processes; 16 kHz float32, in order.

    The list is cut into ``workers`` contiguous parts, each spoken in order by a new interpreter
    (``python -m cmg_lib.data.avdigits.audio``) rather than a multiprocessing pool: the result does not depend on
    what this process synthesised before, and the caller's main module is never re-imported. The parts are fixed by
    ``workers`` alone, so the bytes do not depend on the machine.
    """
    if not jobs:
        return []
    bounds = np.linspace(0, len(jobs), workers + 1).astype(int)
    with tempfile.TemporaryDirectory(prefix="cmg-espeak-") as tmp:
        procs = []
        for p in range(workers):
            job_file, out_file = os.path.join(tmp, f"jobs{p}.json"), os.path.join(tmp, f"waves{p}.npz")
            with open(job_file, "w") as f:
                json.dump([list(j) for j in jobs[bounds[p]: bounds[p + 1]]], f)
            procs.append((subprocess.Popen([sys.executable, "-m", __name__, job_file, out_file],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out_file))
        waves = []
        for proc, out_file in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"espeak-ng worker failed ({proc.returncode}): {err[-2000:]}")
            with np.load(out_file) as data:
                flat, lengths = data["flat"], data["lengths"]
            waves += np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return waves


def _worker_main(job_file: str, out_file: str) -> None:
    with open(job_file) as f:
        jobs = [tuple(j) for j in json.load(f)]
    waves = _synthesize_in_this_process(jobs) if jobs else [np.zeros(0, np.float32)][:0]
    flat = np.concatenate(waves) if waves else np.zeros(0, np.float32)
    np.savez(out_file, flat=flat, lengths=np.asarray([w.size for w in waves], np.int64))


def trim_silence(wav: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``threshold`` (espeak pads words with silence)."""
    loud = np.flatnonzero(np.abs(wav) > threshold)
    if loud.size == 0:
        return wav[:0]
    return wav[loud[0]: loud[-1] + 1]


def room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic room impulse response: direct path, a few early reflections, an exponentially decaying tail."""
    n = max(1, int(rt60 * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.25
    ir = tail
    ir[0] = 1.0
    for delay, amp in zip(rng.integers(40, 800, 3), rng.uniform(0.2, 0.5, 3)):
        if delay < n:
            ir[delay] += amp
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def in_room(utterance: np.ndarray, ir: np.ndarray, max_len: int) -> np.ndarray:
    """The utterance heard in a room, trimmed, at RMS 0.1, at most ``max_len`` samples, quantised to int16."""
    from scipy.signal import fftconvolve

    w = fftconvolve(utterance, ir)[: utterance.size + ir.size // 4]
    w = trim_silence(w / (np.abs(w).max() + 1e-9), 0.02)[:max_len]
    w = w * (0.1 / (np.sqrt(np.mean(w ** 2)) + 1e-9)) if w.size else w
    return np.clip(np.rint(w * 32767), -32768, 32767).astype(np.int16)


def make_noise(rng: np.random.Generator, kind: str, n: int, babble: list[np.ndarray] | None = None) -> np.ndarray:
    """A noise recording of ``n`` samples at unit RMS: ``pink``, ``brown``, ``babble`` (overlapping words of other
    speakers over pink noise, from ``babble``: int16 utterances) or ``hum`` (mains hum and hiss: second domain)."""
    if kind in ("pink", "brown", "babble"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0
        x = np.fft.irfft(spectrum / (np.sqrt(freqs) if kind != "brown" else freqs), n)
        x = x / (np.std(x) + 1e-12)
        if kind == "babble":
            if not babble:
                raise ValueError("babble noise needs utterances")
            speech = np.zeros(n)
            for _ in range(max(4, n // 4000)):
                u = babble[int(rng.integers(len(babble)))].astype(np.float64) / 32767.0
                at = int(rng.integers(0, max(1, n - u.size)))
                speech[at: at + u.size] += u[: n - at]
            x = 0.3 * x + speech / (np.std(speech) + 1e-12)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        x = np.sin(2 * np.pi * 100 * t + rng.uniform(0, 2 * np.pi)) + 0.5 * np.sin(2 * np.pi * 300 * t)
        x = x + 0.7 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected pink, brown, babble or hum")
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


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


def _stft(x: np.ndarray) -> np.ndarray:
    """Complex STFT frames (..., frames, 201): Hann 25 ms, hop 10 ms, frames fully inside the signal."""
    _, _, spec = stft(x, fs=SAMPLE_RATE, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP, boundary=None,
                      padded=False, axis=-1)
    return np.swapaxes(spec, -1, -2).astype(np.complex64)


def log_mel(segments: np.ndarray) -> np.ndarray:
    """Log-mel spectrograms of 1-s waveforms: (N, 16000) -> (N, 64, 98) float32."""
    power = np.abs(_stft(segments)) ** 2                                   # (N, 98, 201)
    return np.log(power @ mel_filterbank().T + 1e-6).swapaxes(1, 2).astype(np.float32)


FRAMES = (SAMPLE_RATE - N_FFT) // HOP + 1          # 98 frames per 1-s segment
LEAD = 3                                           # frames of zeros before a word: ceil(N_FFT / HOP)


class STFTBank:
    """STFT frames of int16 waveforms laid end to end, so segments can be mixed by gathering frames.

    Word ``i`` owns frames ``start[i] .. start[i] + count[i]``, computed on the word with ``LEAD`` hops of silence
    before it: a word placed at hop ``k`` of a segment contributes its frame ``j - k + LEAD`` to segment frame ``j``.
    The last row is all zeros (what an absent word or an out-of-range frame gathers).
    """

    def __init__(self, waves: list[np.ndarray], lead: int = LEAD):
        frames, counts = [], []
        for w in waves:
            x = np.concatenate([np.zeros(lead * HOP, np.float32), w.astype(np.float32) / 32767.0,
                                np.zeros(N_FFT, np.float32)])
            f = _stft(x)
            frames.append(f)
            counts.append(len(f))
        self.count = np.asarray(counts, np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]]).astype(np.int64)
        self.zero = int(self.count.sum())
        self.frames = np.concatenate(frames + [np.zeros((1, N_FFT // 2 + 1), np.complex64)])
        self.lead = lead
        self._mel = None

    def mel_power(self):
        """Mel power of every frame as a float32 torch tensor (frames, 64)."""
        import torch

        if self._mel is None:
            power = np.abs(self.frames) ** 2
            self._mel = torch.from_numpy((power @ mel_filterbank().T).astype(np.float32))
        return self._mel

    def gather(self, item: np.ndarray, hop: np.ndarray) -> np.ndarray:
        """Frame indices (S, 98) of ``item`` (S,) (-1 = none) placed at segment hop ``hop`` (S,)."""
        rel = np.arange(FRAMES)[None] - hop[:, None] + self.lead
        ok = (item[:, None] >= 0) & (rel >= 0) & (rel < self.count[np.maximum(item, 0)][:, None])
        return np.where(ok, self.start[np.maximum(item, 0)][:, None] + rel, self.zero)


def mix_log_mel(words: STFTBank, noises: STFTBank, mix: dict[str, np.ndarray], chunk: int = 2048) -> np.ndarray:
    """Log-mel (S, 64, 98) of segments mixed per ``mix`` (see :func:`compose_waveform` for the keys).

    Sources are added in the mel power domain (``g^2`` times each source's mel power per frame): the power of the
    mixed waveform without the speech-noise cross terms, whose expectation is zero. This gathers 64 numbers per
    frame and source instead of a complex spectrum, which keeps the default build inside its time budget.
    """
    import torch

    wf, nf = words.mel_power(), noises.mel_power()
    n = len(mix["w1"])
    out = np.empty((n, N_MELS, FRAMES), np.float32)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        m = sl.stop - sl.start
        x = torch.full((m * FRAMES, N_MELS), 1e-6)
        for table, rows, gain in (
                (wf, words.gather(mix["w1"][sl], mix["k1"][sl]), mix["g1"][sl]),
                (wf, words.gather(mix["w2"][sl], mix["k2"][sl]), mix["g2"][sl]),
                (nf, noises.start[mix["noise"][sl]][:, None] + mix["q"][sl][:, None] + np.arange(FRAMES)[None],
                 mix["gn"][sl])):
            g = torch.from_numpy(np.repeat(np.asarray(gain, np.float32) ** 2, FRAMES))[:, None]
            x.addcmul_(table.index_select(0, torch.from_numpy(rows.reshape(-1))), g)
        out[sl] = torch.log(x).reshape(m, FRAMES, N_MELS).transpose(1, 2).numpy()
    return out


def compose_waveform(word_waves: list[np.ndarray], noise_waves: list[np.ndarray], mix: dict[str, np.ndarray],
                     i: int) -> np.ndarray:
    """The 1-s waveform of segment ``i`` of ``mix``: ``g1 * word w1`` at hop ``k1``, ``g2 * word w2`` at ``k2``
    (-1 = none), over ``gn *`` noise recording ``noise`` from hop ``q`` (noise STFTs use no lead)."""
    seg = mix["gn"][i] * noise_waves[mix["noise"][i]][mix["q"][i] * HOP: mix["q"][i] * HOP + SAMPLE_RATE] / 32767.0
    seg = seg.astype(np.float32)
    for w, k, g in (("w1", "k1", "g1"), ("w2", "k2", "g2")):
        if mix[w][i] >= 0:
            u = word_waves[mix[w][i]].astype(np.float32) / 32767.0
            at = int(mix[k][i]) * HOP
            m = min(u.size, SAMPLE_RATE - at)
            seg[at: at + m] += np.float32(mix[g][i]) * u[:m]
    return seg


if __name__ == "__main__":
    _worker_main(sys.argv[1], sys.argv[2])
