"""End-to-end separation speed and memory: cusep against a pipeline built like the authors'.

Default input: 3 minutes of 44.1 kHz stereo, 4 instruments, cusep's defaults (soft masks; pass
``--wiener-iterations 0,2`` for both settings). For each setting it prints cusep's real-time
factor and where the time goes (decode + resample + STFT, network, mask mapping, Wiener, residual
and floor, iSTFT, writing), and once the fixed start-up cost (importing the CLI, loading the
model, the first window's one-off kernel set-up).

Both pipelines run in this one process on the same mixture and the same model weights:
- cusep: read -> Separator (overlapping windows, bf16/channels_last where the CPU has it,
  batched torch EM Wiener, full band, mixture-consistent) -> streamed atomic writes;
- reference: read -> mono 11025 Hz -> fp32 network on non-overlapping 65535-sample segments ->
  masks x |X| for all 13 outputs -> numpy ``norbert.wiener`` per segment -> iSTFT -> write the
  requested stems at 11025 Hz.
Then, in a child process, the peak resident memory of ``cusep separate`` on a 30-minute file.

    python benchmarks/bench_separate.py [--model NAME|DIR] [--rate 44100] [--channels 2]
        [--wiener-iterations 0,2] [--no-reference] [--memory-minutes 30]
"""

from __future__ import annotations

import argparse
import importlib
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

from cusep import wiener
from cusep.audio import AudioWriter, read_audio, resample, to_mono, write_audio
from cusep.checkpoint import load_model
from cusep.instruments import label_vector
from cusep.model import ConditionedUNet, ModelConfig
from cusep.runtime import tune_cpu_allocator
from cusep.separate import Separator, SeparatorConfig
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


class Stages:
    """Wall time per stage of a cusep run, by wrapping the functions the Separator calls."""

    STAGES = ("decode+resample+STFT", "network", "mask mapping", "Wiener", "residual+floor",
              "iSTFT", "writing")

    def __init__(self, sep: Separator) -> None:
        self.times = dict.fromkeys(self.STAGES, 0.0)
        module = importlib.import_module("cusep.separate")  # cusep.separate: the function
        for name, stage in (("to_mono", 0), ("stft", 0), ("extend_and_map", 2),
                            ("consistent_gain", 4), ("consistent_planar_", 4), ("istft", 5)):
            setattr(module, name, self.timed(self.STAGES[stage], getattr(module, name)))
        resampler = module.StreamResampler  # streams the input: resampled block by block
        for name in ("push", "flush"):
            setattr(resampler, name, self.timed(self.STAGES[0], getattr(resampler, name)))
        for name in ("softmask_gain", "mono_gain", "em_planar", "gain_times", "from_planar",
                     "power", "planar"):
            setattr(wiener, name, self.timed("Wiener", getattr(wiener, name)))
        sep.model.forward = self.timed("network", sep.model.forward)

    def timed(self, stage: str, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[stage] += time.perf_counter() - start
        return run

    def reset(self) -> None:
        self.times = dict.fromkeys(self.STAGES, 0.0)


def run_cusep(sep: Separator, path: Path, out: Path, stages: Stages | None = None) -> None:
    start = time.perf_counter()
    audio, rate = read_audio(path)
    if stages is not None:
        stages.times["decode+resample+STFT"] += time.perf_counter() - start
    writers = [AudioWriter(out / f"{c}.wav", rate, audio.shape[0]) for c in CODES]
    for block in sep.iter_blocks(audio, rate, CODES):
        start = time.perf_counter()
        for writer, stem in zip(writers, block, strict=True):
            writer.write(stem)
        if stages is not None:
            stages.times["writing"] += time.perf_counter() - start
    start = time.perf_counter()
    for writer in writers:
        writer.finish()
    if stages is not None:
        stages.times["writing"] += time.perf_counter() - start


def startup_cost(model: ConditionedUNet, model_arg: list[str] | None, tmp: Path, rate: int,
                 channels: int, device: str = "cpu") -> None:
    """Print the fixed cost of a run: CLI import (child process), model load, first window."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cusep.cli"], check=True)
    imported = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    imported -= time.perf_counter() - start  # the interpreter's own start
    start = time.perf_counter()
    if model_arg is not None:
        load_model(model_arg[1] if model_arg else None)
    loaded = time.perf_counter() - start
    short = tmp / "short.wav"
    sf.write(short, synth_mixture(5.0, rate, channels, seed=1).T, rate, subtype="PCM_16")
    sep = Separator(model, device=device)
    start = time.perf_counter()
    run_cusep(sep, short, tmp / "cold")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    run_cusep(sep, short, tmp / "warm2")
    warm = time.perf_counter() - start
    print(f"start-up: import cusep.cli {imported:.2f} s, model load {loaded:.2f} s, "
          f"first window's set-up {max(cold - warm, 0):.2f} s (5 s input: cold {cold:.2f} s, "
          f"warm {warm:.2f} s)")


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
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--wiener-iterations", default="0",
                        help="comma-separated settings to time, e.g. 0,2 (default 0: cusep's)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the authors'-style pipeline (norbert, 2 iterations)")
    parser.add_argument("--memory-minutes", type=float, default=30.0,
                        help="length of the memory test input (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
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
    settings = [int(n) for n in args.wiener_iterations.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mix = synth_mixture(args.minutes * 60, args.rate, args.channels)
        src = tmp / "mix.wav"
        sf.write(src, mix.T, args.rate, subtype="PCM_16")
        seconds = mix.shape[-1] / args.rate
        print(f"input: {args.minutes:g} min, {args.rate} Hz, {args.channels} channel(s), "
              f"4 instruments, {args.threads} threads, device {args.device}")
        startup_cost(model, model_arg, tmp, args.rate, args.channels, args.device)
        times = {}
        for iterations in settings:
            sep = Separator(model, device=args.device,
                            config=SeparatorConfig(wiener_iterations=iterations))
            run_cusep(sep, src, tmp / "warm")  # warm-up (oneDNN kernels, allocator)
            stages = Stages(sep)
            start = time.perf_counter()
            run_cusep(sep, src, tmp / "a", stages)
            total = time.perf_counter() - start
            name = f"cusep --wiener-iterations {iterations}"
            times[name] = total
            print(f"{name} ({sep.precision}): {total:.2f} s, {seconds / total:.1f}x real time")
            split = stages.times
            split["other (overlap-add, copies)"] = total - sum(split.values())
            print("  " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)"
                                   for k, v in split.items()))
            importlib.reload(wiener)  # unwrap for the next setting
            importlib.reload(importlib.import_module("cusep.separate"))
        if not args.no_reference:
            start = time.perf_counter()
            run_reference(model.float(), src, tmp / "b")
            times["reference"] = time.perf_counter() - start
            print(f"reference (norbert, 2 iterations): {times['reference']:.2f} s, "
                  f"{seconds / times['reference']:.1f}x real time")
            for name, t in times.items():
                if name != "reference":
                    print(f"{name} is {times['reference'] / t:.2f}x the reference's speed")
        if args.memory_minutes > 0 and model_arg is not None:
            long = tmp / "long.wav"
            sf.write(long, np.tile(mix, (1, int(np.ceil(args.memory_minutes / args.minutes)))).T,
                     args.rate, subtype="PCM_16")
            mb = peak_memory_mb(model_arg, long, tmp / "mem")
            print(f"peak memory of `cusep separate` on {args.memory_minutes:g} min: {mb:.0f} MB")


if __name__ == "__main__":
    main()
