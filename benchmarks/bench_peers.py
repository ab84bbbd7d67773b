"""Speed against peer architectures: cusep vs Open-Unmix and HTDemucs, random weights, same input.

All three separate the same 44.1 kHz stereo mixture into 4 stems in this one process on the CPU,
with their usual inference settings: cusep's Separator (its defaults: soft masks;
``--wiener-iterations`` to change); Open-Unmix's Separator (4 default-size targets, ``niter`` EM
iterations, as ``umx``); HTDemucs through ``demucs.apply.apply_model`` (segments, overlap 0.25,
no shifts). Weights are random (architecture speed only, no quality). Open-Unmix and HTDemucs
come from the ``openunmix`` and ``demucs`` packages when importable; a missing one is skipped
with a message (they are not dependencies of cusep).

    python benchmarks/bench_peers.py [--seconds 30] [--threads 2] [--wiener-iterations 0]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from bench_separate import synth_mixture  # benchmarks/ is on sys.path when run as a script

from cusep.checkpoint import load_model
from cusep.model import ConditionedUNet, ModelConfig
from cusep.runtime import tune_cpu_allocator
from cusep.separate import Separator, SeparatorConfig

RATE = 44100
CODES = ("vn", "va", "vc", "db")


def cusep_runner(iterations: int):
    try:
        model, _ = load_model(None)  # the shipped model's architecture (weights do not matter)
    except Exception:  # noqa: BLE001 - no registry: the default architecture, untrained
        model = ConditionedUNet(ModelConfig()).eval()
    sep = Separator(model, device="cpu", config=SeparatorConfig(wiener_iterations=iterations))
    return f"cusep ({sep.precision}, {iterations} EM iterations)", \
        lambda audio: sep.separate(audio, RATE, list(CODES))


def openunmix_runner(iterations: int):
    from openunmix.model import OpenUnmix
    from openunmix.model import Separator as UmxSeparator

    torch.manual_seed(0)
    targets = {name: OpenUnmix(nb_bins=4096 // 2 + 1, nb_channels=2, hidden_size=512,
                               max_bin=1487).eval()
               for name in ("vocals", "drums", "bass", "other")}
    sep = UmxSeparator(targets, niter=iterations, residual=False, sample_rate=RATE,
                       n_fft=4096, n_hop=1024, nb_channels=2).eval()

    def run(audio: np.ndarray):
        with torch.inference_mode():
            return sep(torch.from_numpy(audio)[None])
    return f"Open-Unmix (4 targets, {iterations} EM iterations)", run


def htdemucs_runner(_iterations: int):
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()

    def run(audio: np.ndarray):
        with torch.inference_mode():
            return apply_model(model, torch.from_numpy(audio)[None], shifts=0, split=True,
                               overlap=0.25, progress=False)
    return "HTDemucs (4 sources, segments, overlap 0.25)", run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wiener-iterations", type=int, default=0,
                    help="for cusep and Open-Unmix (cusep's default 0; umx's 1)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    audio = synth_mixture(args.seconds, RATE, 2)
    warm = audio[:, : 8 * RATE]
    print(f"input: {args.seconds:g} s, {RATE} Hz stereo, 4 stems, {args.threads} threads, CPU, "
          "random weights")
    results = {}
    for make, package in ((cusep_runner, None), (openunmix_runner, "openunmix"),
                          (htdemucs_runner, "demucs")):
        try:
            name, run = make(args.wiener_iterations)
        except ImportError:
            print(f"(skipped: `{package}` is not installed; pip install {package})")
            continue
        run(warm)  # warm-up: kernels, allocator
        start = time.perf_counter()
        run(audio)
        results[name] = time.perf_counter() - start
    base = next(iter(results.values()))
    print(f"{'':52s}{'seconds':>9s}{'x real time':>13s}{'time / cusep':>14s}")
    for name, t in results.items():
        print(f"{name:52s}{t:9.2f}{args.seconds / t:13.1f}{t / base:13.2f}x")


if __name__ == "__main__":
    main()
