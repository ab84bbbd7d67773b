"""End-to-end separation speed and memory: cusep against a pipeline built like the authors'.

Both run in this one process on the same mixture and the same model weights:
- cusep: read -> Separator (overlapping windows, bf16/channels_last where the CPU has it,
  batched torch EM Wiener, full band, mixture-consistent) -> streamed atomic writes;
- reference: read -> mono 11025 Hz -> fp32 network on non-overlapping 65535-sample segments ->
  masks x |X| for all 13 outputs -> numpy ``norbert.wiener`` per segment -> iSTFT -> write the
  requested stems at 11025 Hz.
Then, in a child process, the peak resident memory of ``cusep separate`` on a 30-minute file.

    python benchmarks/bench_separate.py [--model NAME|DIR] [--rate 11025] [--channels 1]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cusep.audio import AudioWriter, read_audio, resample, to_mono, write_audio
from cusep.checkpoint import load_model
from cusep.instruments import label_vector
from cusep.model import ConditionedUNet, ModelConfig
from cusep.separate import Separator, SeparatorConfig, tune_cpu_allocator
from cusep.spectral import features, istft

CODES = ("vn", "va", "vc", "db")


def synth_mixture(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """Four harmonic 'players' with notes, vibrato and different spectra: (channels, samples)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    mix = np.zeros(n)
    for k, (lo, hi) in enumerate([(196, 880), (130, 660), (65, 330), (41, 200)]):
        f0 = np.repeat(rng.uniform(lo, hi, int(seconds * 2) + 1), rate // 2)[:n]
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.005 * np.sin(2 * np.pi * 5 * t))) / rate
        voice = sum(np.sin(h * phase) / h ** (1 + 0.3 * k) for h in range(1, 12))
        mix += 0.2 * voice
    mix /= np.abs(mix).max() * 1.25
    return np.stack([mix * (1 - 0.1 * c) for c in range(channels)]).astype(np.float32)


def run_cusep(sep: Separator, path: Path, out: Path) -> None:
    audio, rate = read_audio(path)
    writers = [AudioWriter(out / f"{c}.wav", rate, audio.shape[0]) for c in CODES]
    for block in sep.iter_blocks(audio, rate, CODES):
        for writer, stem in zip(writers, block, strict=True):
            writer.write(stem)
    for writer in writers:
        writer.finish()


def run_reference(model: ConditionedUNet, path: Path, out: Path) -> None:
    import norbert

    spec = model.config.spectral
    audio, rate = read_audio(path)
    mono = resample(to_mono(audio), rate, spec.sample_rate)
    seg = spec.segment
    mono = np.pad(mono, (0, -len(mono) % seg))
    context = torch.tensor([label_vector(CODES, model.config.instruments)])
    index = [model.config.instruments.index(c) for c in CODES]
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(mono), seg):
            x = torch.from_numpy(mono[start:start + seg]).unsqueeze(0)
            inp, stft = features(x, spec)
            masks = model(inp, context)[0]  # (13, F, T), fp32
            mag = stft[0].abs()
            v = (masks * mag).permute(2, 1, 0).unsqueeze(2).numpy().astype(np.float32)
            y = norbert.wiener(v, stft[0].T.unsqueeze(-1).numpy().copy(), iterations=2)
            est = torch.from_numpy(y[:, :, 0, index]).permute(2, 1, 0)
            outputs.append(istft(est, seg, spec.n_fft, spec.hop).numpy())
    stems = np.concatenate(outputs, axis=-1)
    for code, stem in zip(CODES, stems, strict=True):
        write_audio(out / f"{code}.wav", stem[None], spec.sample_rate)


def peak_memory_mb(model_arg: list[str], path: Path, out: Path) -> float:
    """Peak RSS of a `cusep separate` child process on ``path``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "cusep", "separate", str(path), "-i", ",".join(CODES),
                    "-o", str(out), "-d", "cpu", *model_arg], check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or folder (default: registry's; "
                        "an untrained network of the default architecture if there is none)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=11025)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--memory-minutes", type=float, default=30.0,
                        help="length of the memory test input (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    try:
        model, _ = load_model(args.model)
        model_arg = ["-m", args.model] if args.model else []
    except Exception as exc:  # noqa: BLE001 - a benchmark falls back to an untrained network
        print(f"(no trained model: {exc}; timing an untrained network of the same size)")
        model = ConditionedUNet(ModelConfig()).eval()
        model_arg = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mix = synth_mixture(args.minutes * 60, args.rate, args.channels)
        src = tmp / "mix.wav"
        sf.write(src, mix.T, args.rate, subtype="PCM_16")
        seconds = mix.shape[-1] / args.rate
        sep = Separator(model, device="cpu", config=SeparatorConfig(wiener_iterations=2))
        run_cusep(sep, src, tmp / "warm")  # warm-up (oneDNN kernels, allocator)
        times = {}
        for name, fn in (("cusep", lambda: run_cusep(sep, src, tmp / "a")),
                         ("reference", lambda: run_reference(model.float(), src, tmp / "b"))):
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        print(f"input: {args.minutes:g} min, {args.rate} Hz, {args.channels} channel(s), "
              f"4 instruments, 2 Wiener iterations, {args.threads} threads, "
              f"cusep precision {sep.precision}")
        for name, t in times.items():
            print(f"{name:10s} {t:8.2f} s   {seconds / t:6.1f}x real time")
        print(f"cusep is {times['reference'] / times['cusep']:.2f}x the reference's speed")
        if args.memory_minutes > 0 and model_arg is not None:
            long = tmp / "long.wav"
            sf.write(long, np.tile(mix, (1, int(np.ceil(args.memory_minutes / args.minutes)))).T,
                     args.rate, subtype="PCM_16")
            mb = peak_memory_mb(model_arg, long, tmp / "mem")
            print(f"peak memory of `cusep separate` on {args.memory_minutes:g} min: {mb:.0f} MB")


if __name__ == "__main__":
    main()
