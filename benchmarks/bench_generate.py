"""Generation throughput (samples/s, vocoder included): the naive path against the batched one.

    python benchmarks/bench_generate.py [--model toy|diff-foley] [--device cuda] [--steps 25] [--batch 32]
                                        [--compile] [--json out.json]

A sample is one clip's audio: 25-step DPM-Solver++ with classifier-free guidance (w = 4.5) through
:func:`cinefoley.generate.sample_latents`, the VAE decoding (``decode_latent``) and the vocoder. Timed
in one run, on the same random-weight model:

* **naive** (notebook style): fp32, separate conditional and unconditional UNet calls
  (``batched_cfg=False``), ``--naive-batch`` samples at a time (1), then Diff-Foley's librosa vocoder
  (:func:`cinefoley.media.audio.mel_to_audio_librosa`) one clip at a time. librosa takes seconds per clip,
  so it is timed on ``--librosa-clips`` clips and its mean time per clip is counted for every sample;
* **batched**: cond + uncond in one UNet call, ``--batch`` samples at a time, bf16 autocast on CUDA
  (fp32 on a CPU), the batched torch :class:`~cinefoley.media.vocoder.GriffinLimVocoder` on the device;
  the VAE decodes in fp32, as :func:`cinefoley.generate.generate_set` does;
* **batched + compile** (``--compile``): the same with the UNet in channels-last and ``torch.compile``.

Each path reports the time per sample split between the UNet (the whole sampling loop), the VAE
and the vocoder, after an untimed warm-up (a 2-step run of the same shapes; it holds the compile).
FLOPs of the UNet and VAE per sample come from ``torch.utils.flop_counter``; the MFU is against the
card's dense bf16 peak (the vocoder's FFTs are not counted).

Models (random weights): ``toy`` = a small LDM shaped like CineToy's (mel 128 x 128, 8 frames of
512-d features, latent 4 x 16 x 16); ``diff-foley`` = :func:`cinefoley.models.ldm.build_ldm` at Diff-Foley's
size (UNet 320 channels, mult 1-2-4-4, context 768; latent 4 x 16 x 64; SD VAE). ``--tiny`` keeps a
model's mel and latent shapes (and Diff-Foley's context width) but narrows its layers, for CPUs and CI.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_distill import device_name, fmt_mfu, release_memory, synchronize, utilisation
from cinefoley.media.audio import N_MELS, mel_to_audio_librosa
from cinefoley.generate import initial_noise, sample_latents
from cinefoley.models.ldm import WINDOW_FRAMES, build_ldm, diff_foley_ldm_config
from cinefoley.utils import atomic_write_json, versions
from cinefoley.media.vocoder import GriffinLimVocoder

MEL_FRAMES_PER_FRAME = 16
#: (video frames per sample, config overrides, config overrides under --tiny)
MODELS = {
    "toy": (8,
            dict(unet={"model_channels": 64, "channel_mult": [1, 2, 4], "attention_resolutions": [1, 2, 4],
                       "num_res_blocks": 1, "num_heads": 4, "context_dim": 256},
                 vae={"ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1},
                 cond={"embed_dim": 256, "seq_len": 8}),
            dict(unet={"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [1, 2],
                       "num_res_blocks": 1, "num_heads": 2, "context_dim": 64},
                 vae={"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1},
                 cond={"embed_dim": 64, "seq_len": 8})),
    "diff-foley": (WINDOW_FRAMES,
                   {},
                   dict(unet={"model_channels": 32, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 1,
                              "num_heads": 2},
                        vae={"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1})),
}


def build_model(name: str, tiny: bool, device: torch.device):
    """A random-weight :class:`~cinefoley.models.ldm.DiffFoleyLDM` and its (frames, latent shape)."""
    frames, full, small = MODELS[name]
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: ~1e9 random weights are slow on a CPU
        model = build_ldm(diff_foley_ldm_config(**(small if tiny else full))).eval()
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    latent = (model.unet.config.in_channels, N_MELS // factor, MEL_FRAMES_PER_FRAME * frames // factor)
    return model, frames, latent


def timed(fn, device: torch.device):
    synchronize(device)
    started = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - started


def decode(model, z: torch.Tensor) -> torch.Tensor:
    """Latents -> mels in [0, 1] (random weights can give non-finite values; the vocoders need finite ones)."""
    return torch.nan_to_num(model.decode_latent(z).float()).clamp(0, 1)


def flops_per_sample(model, feats: torch.Tensor, noise: torch.Tensor, steps: int) -> dict:
    """UNet FLOPs of one sample's CFG pair over all steps, and the VAE's of one decoding."""
    ctx = torch.cat([model.context(feats[:1], uncond=True), model.context(feats[:1])])
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model.unet(torch.cat([noise[:1], noise[:1]]), 999, encoder_hidden_states=ctx)
        unet = counter.get_total_flops() * steps
        with FlopCounterMode(display=False) as counter:
            model.decode_latent(noise[:1])
    return {"unet": unet, "vae": counter.get_total_flops()}


def time_naive(model, feats, noise, args, device) -> dict:
    """Notebook style: fp32, separate cond/uncond calls, small batches, librosa one clip at a time."""
    b = args.naive_batch
    warm = decode(model, sample_latents(model, feats[:b], noise[:b], steps=2, batched_cfg=False))
    mel_to_audio_librosa(warm[0, :, :8].cpu().numpy(), n_iter=1)  # warm-up (and librosa's lazy imports)
    unet_s = vae_s = 0.0
    mels = []
    for i in range(0, args.naive_samples, b):
        z, t = timed(lambda: sample_latents(model, feats[i:i + b], noise[i:i + b], steps=args.steps,
                                            batched_cfg=False), device)
        unet_s += t
        mel, t = timed(lambda: decode(model, z), device)
        vae_s += t
        mels.append(mel.cpu())
    mels = torch.cat(mels).numpy()
    k = min(args.librosa_clips, len(mels))
    _, librosa_s = timed(lambda: [mel_to_audio_librosa(m) for m in mels[:k]], torch.device("cpu"))
    n = args.naive_samples
    return split({"unet": unet_s / n, "vae": vae_s / n, "vocoder": librosa_s / k},
                 batch=b, samples=n, precision="fp32", cfg="separate calls",
                 vocoder=f"librosa, one clip at a time (timed on {k} clips, extrapolated per sample)")


def time_batched(model, decoder, feats, noise, args, device, *, compiled: bool) -> dict:
    """cond + uncond in one UNet call, ``args.batch`` samples at a time, torch Griffin-Lim on the device."""
    dtype = torch.bfloat16 if device.type == "cuda" else None
    vocoder = GriffinLimVocoder(device=device)
    b = args.batch
    started = time.perf_counter()
    vocoder(decode(decoder, sample_latents(model, feats[:b], noise[:b], steps=2, dtype=dtype)))  # warm-up
    synchronize(device)
    warmup_s = time.perf_counter() - started
    totals = {"unet": 0.0, "vae": 0.0, "vocoder": 0.0}
    for _ in range(args.repeats):
        z, t = timed(lambda: sample_latents(model, feats[:b], noise[:b], steps=args.steps, dtype=dtype), device)
        totals["unet"] += t
        mel, t = timed(lambda: decode(decoder, z), device)
        totals["vae"] += t
        _, t = timed(lambda: vocoder(mel), device)
        totals["vocoder"] += t
    n = b * args.repeats
    return split({k: v / n for k, v in totals.items()}, batch=b, samples=n,
                 precision="bf16 autocast (UNet)" if dtype else "fp32", cfg="one batched call",
                 vocoder=f"torch Griffin-Lim, batched on {device.type}", compiled=compiled, warmup_s=warmup_s)


def split(per_sample_s: dict, **info) -> dict:
    total = sum(per_sample_s.values())
    return dict(info, samples_per_s=1.0 / total, ms_per_sample={k: 1e3 * v for k, v in per_sample_s.items()},
                share={k: v / total for k, v in per_sample_s.items()})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="toy")
    parser.add_argument("--tiny", action="store_true", help="narrow layers, same mel and latent shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps")
    parser.add_argument("--batch", type=int, default=32, help="samples per batched call (the CFG batch is twice this)")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches of the batched paths")
    parser.add_argument("--naive-batch", type=int, default=1)
    parser.add_argument("--naive-samples", type=int, default=3, help="samples timed on the naive path")
    parser.add_argument("--librosa-clips", type=int, default=2, help="clips the librosa vocoder is timed on")
    parser.add_argument("--compile", action="store_true", help="also time the batched path with torch.compile")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here (after every stage)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    model, frames, latent = build_model(args.model, args.tiny, device)
    n = max(args.batch, args.naive_samples)
    feats = torch.nn.functional.normalize(torch.randn(n, frames, 512, generator=torch.Generator().manual_seed(0)),
                                          dim=-1).to(device)
    noise = initial_noise(latent, list(range(n))).to(device)
    results = {"benchmark": "generate", "model": args.model, "tiny": args.tiny, "device": str(device),
               "device_name": device_name(device), "steps": args.steps, "frames": frames,
               "latent": list(latent), "mel": [N_MELS, MEL_FRAMES_PER_FRAME * frames],
               "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
               "vae_parameters": sum(p.numel() for p in model.vae.parameters()),
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
               "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
               "torch_threads": torch.get_num_threads(), "versions": versions(), "paths": {}}

    def save():
        if args.json:
            atomic_write_json(args.json, results)

    print(f"generation benchmark: {args.model}{' (tiny)' if args.tiny else ''} LDM, UNet "
          f"{results['unet_parameters'] / 1e6:.1f} M + VAE {results['vae_parameters'] / 1e6:.1f} M parameters, "
          f"latent {'x'.join(map(str, latent))}, {args.steps} steps, {device} ({results['device_name']})", flush=True)
    results["flops_per_sample"] = flops = flops_per_sample(model, feats, noise, args.steps)
    print(f"  GFLOPs per sample: UNet {flops['unet'] / 1e9:.1f} (CFG pair x {args.steps} steps), "
          f"VAE {flops['vae'] / 1e9:.1f}")
    print(f"  {'path':36s} {'samples/s':>10s} {'UNet ms':>9s} {'VAE ms':>8s} {'voc. ms':>9s} {'MFU':>8s} "
          f"{'vs naive':>8s} {'UNet vs naive':>13s}", flush=True)

    plan = [("naive", lambda: time_naive(model, feats, noise, args, device)),
            ("batched", lambda: time_batched(model, model, feats, noise, args, device, compiled=False))]
    if args.compile:
        def compiled_path():
            unet = torch.compile(model.unet.to(memory_format=torch.channels_last))
            fast = SimpleNamespace(unet=unet, context=model.context, noise_schedule=model.noise_schedule)
            return time_batched(fast, model, feats, noise, args, device, compiled=True)
        plan.append(("batched_compiled", compiled_path))
    for name, run in plan:
        release_memory(device)
        path = run()
        path["mfu"] = utilisation(sum(flops.values()) * path["samples_per_s"], device)
        results["paths"][name] = path
        if name != "naive":
            naive = results["paths"]["naive"]
            results[f"speedup_{name}"] = path["samples_per_s"] / naive["samples_per_s"]
            results[f"unet_speedup_{name}"] = naive["ms_per_sample"]["unet"] / path["ms_per_sample"]["unet"]
        save()
        print_path(results, name)
    print(f"  naive vocoder: {results['paths']['naive']['vocoder']}")
    return results


def print_path(r: dict, name: str) -> None:
    p, naive = r["paths"][name], r["paths"]["naive"]
    ms = p["ms_per_sample"]
    label = f"{name} (batch {p['batch']}, {p['precision'].split(' ')[0]})"
    shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in p["share"].items())
    warmup = f"; warm-up {p['warmup_s']:.1f} s" if "warmup_s" in p else ""
    print(f"  {label:36s} {p['samples_per_s']:10.3f} {ms['unet']:9.1f} {ms['vae']:8.1f} {ms['vocoder']:9.1f} "
          f"{fmt_mfu(p['mfu']):>8s} {p['samples_per_s'] / naive['samples_per_s']:7.2f}x "
          f"{naive['ms_per_sample']['unet'] / ms['unet']:12.2f}x   ({shares}{warmup})", flush=True)


if __name__ == "__main__":
    main()
