"""Throughput and agreement of the vocoders on 8.192-s mels (128 x 512), Diff-Foley's LDM window.

    python benchmarks/bench_vocoder.py [--batch 16] [--librosa-clips 3] [--threads N] [--json out.json]

Prints clips/s for the librosa route (one clip at a time, as Diff-Foley runs it), for the batched
torch vocoder on CPU and, when CUDA is available, on the GPU (fp32, autocast off), the speed-up
over librosa, and the agreement of the torch output with librosa's on the same mels and seed:
spectral convergence (SC) of each against the NNLS magnitude, mean |difference| of the re-analysed
log-mels (normalised units, 0.01 = 1 dB), and the correlation of the two waveforms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from cinefoley.media.audio import mel_spectrogram, mel_spectrogram_torch, mel_to_audio_librosa
from cinefoley.utils import atomic_write_json, versions
from cinefoley.media.vocoder import GriffinLimVocoder, mel_to_magnitude, spectral_convergence

SECONDS = 8.192


def synthetic_clip(seed: int, sr: int = 16000) -> np.ndarray:
    """A chirp, a gated harmonic stack and noise bursts with per-clip pitch and rhythm."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(SECONDS * sr)) / sr
    f0 = rng.uniform(150, 600)
    y = 0.3 * np.sin(2 * np.pi * (f0 * t + rng.uniform(100, 600) * t ** 2 / SECONDS))
    for h in range(1, 6):
        y += 0.1 / h * np.sin(2 * np.pi * 2 * f0 * h * t) * (t % 1.0 < rng.uniform(0.2, 0.8))
    y += 0.3 * np.exp(-30 * (t % rng.uniform(0.2, 0.6))) * rng.randn(t.size)
    return y.astype(np.float32)


def clips_per_second(fn, n_clips: int, sync=lambda: None) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return n_clips / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="clips per torch batch on CPU")
    parser.add_argument("--cuda-batch", type=int, default=64, help="clips per torch batch on CUDA")
    parser.add_argument("--librosa-clips", type=int, default=3)
    parser.add_argument("--n-iter", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and numpy's BLAS (default: the libraries' own)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.threads:  # the same budget for both routes: torch's threads and numpy's BLAS
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)

    n = max(args.batch, args.cuda_batch if torch.cuda.is_available() else 0, args.librosa_clips)
    mels = np.stack([mel_spectrogram(synthetic_clip(seed)) for seed in range(n)])
    assert mels.shape[1:] == (128, 512)
    results: dict = {"n_iter": args.n_iter, "torch_threads": torch.get_num_threads(), "versions": versions()}

    k = args.librosa_clips
    rate, librosa_wavs = clips_per_second(
        lambda: np.stack([mel_to_audio_librosa(m, n_iter=args.n_iter) for m in mels[:k]]), k)
    results["librosa_clips_per_s"] = rate

    vocoder = GriffinLimVocoder(n_iter=args.n_iter)
    vocoder(mels[:1])  # warm-up (constants, allocator)
    rate, torch_wavs = clips_per_second(lambda: vocoder(torch.from_numpy(mels[:args.batch])), args.batch)
    results["torch_cpu_clips_per_s"] = rate
    results["torch_cpu_batch"] = args.batch

    if torch.cuda.is_available():
        device_mels = torch.from_numpy(mels[:args.cuda_batch]).cuda()
        vocoder(device_mels)
        rate, _ = clips_per_second(lambda: vocoder(device_mels), args.cuda_batch, torch.cuda.synchronize)
        results["torch_cuda_clips_per_s"] = rate
        results["torch_cuda_batch"] = args.cuda_batch
        results["cuda_device"] = torch.cuda.get_device_name(0)

    # agreement on the clips both routes vocoded
    reference = torch.from_numpy(librosa_wavs)
    ours = torch_wavs[:k]
    magnitude = mel_to_magnitude(torch.from_numpy(mels[:k]))
    remel = [mel_spectrogram_torch(torch.nn.functional.pad(w, (0, 1))) for w in (ours, reference)]
    results["sc_torch"] = spectral_convergence(ours, magnitude).tolist()
    results["sc_librosa"] = spectral_convergence(reference, magnitude).tolist()
    results["remel_l1_torch_vs_librosa"] = (remel[0] - remel[1]).abs().mean(dim=(1, 2)).tolist()
    results["remel_l1_torch_vs_input"] = (remel[0] - torch.from_numpy(mels[:k])).abs().mean(dim=(1, 2)).tolist()
    results["waveform_correlation"] = [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(ours.numpy(), librosa_wavs)]

    print(f"vocoder benchmark: {k} librosa clips, 128x512 mels, n_iter={args.n_iter}, "
          f"torch threads={results['torch_threads']}")
    base = results["librosa_clips_per_s"]
    print(f"  librosa (one clip at a time)      {base:8.3f} clips/s   1.00x")
    print(f"  torch CPU (batch {args.batch:3d})             {results['torch_cpu_clips_per_s']:8.3f} clips/s"
          f"  {results['torch_cpu_clips_per_s'] / base:5.2f}x")
    if "torch_cuda_clips_per_s" in results:
        print(f"  torch CUDA fp32 (batch {args.cuda_batch:3d})      {results['torch_cuda_clips_per_s']:8.3f} clips/s"
              f"  {results['torch_cuda_clips_per_s'] / base:5.2f}x   ({results['cuda_device']})")
    else:
        print("  torch CUDA: not available")
    print("  agreement with librosa (per clip):")
    for key in ("sc_torch", "sc_librosa", "remel_l1_torch_vs_librosa", "remel_l1_torch_vs_input",
                "waveform_correlation"):
        print(f"    {key:28s} " + "  ".join(f"{v:.6f}" for v in results[key]))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
