"""Small, randomly initialised Diff-Foley models saved in the released files' formats (test helpers).

Nobody here has the real checkpoints, so the tests write files with the same structure: OpenCLIP-style
``{"epoch", "name", "state_dict", "optimizer"}`` with DDP's ``module.`` prefix for CAVP, and Lightning's
``{"epoch", "global_step", "pytorch-lightning_version", "state_dict", "hyper_parameters", ...}`` for the
LDM and the classifier, whose non-tensor hyper-parameters make ``torch.load(weights_only=True)`` refuse them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from cinefoley.models.align_classifier import AlignmentClassifier, align_classifier_state_dict, eval_classifier_config
from cinefoley.models.cavp import CAVPVideoEncoder
from cinefoley.models.ldm import DiffFoleyLDM, build_ldm, diff_foley_ldm_config, ldm_state_dict
from cinefoley.models.panns import Cnn14
from cinefoley.models.vggish import VGGish
from cinefoley.utils import atomic_torch_save

CAVP_SMALL = {"stage_blocks": (1, 1, 2, 1), "base_channels": 4}
LDM_SMALL = diff_foley_ldm_config(
    unet={"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2, 1], "num_res_blocks": 1,
          "num_heads": 2, "context_dim": 16},
    vae={"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1},
    cond={"origin_dim": 8, "embed_dim": 16},
)
PANNS_SMALL = {"base_channels": 4}  # blocks 4 ... 128 wide: "2048" becomes 128-d
VGGISH_SMALL = {"channels": (4, 8, 8, 8, 16, 16), "hidden": 32}
# a small LDM / classifier conditioned on CAVP's 512-d features, as the released ones are; the VAE
# downsamples 8x like Diff-Foley's, so that the UNet's attention stays cheap on a CPU
LDM_CAVP = diff_foley_ldm_config(
    unet={"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2], "num_res_blocks": 1,
          "num_heads": 2, "context_dim": 16},
    vae={"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1},
    cond={"origin_dim": 512, "embed_dim": 16},
)
CLASSIFIER_CAVP = eval_classifier_config(
    backbone={"model_channels": 32, "num_heads": 2, "context_dim": 16},
    vae={"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1},
    cond={"origin_dim": 512, "embed_dim": 16},
)
CLASSIFIER_SMALL = eval_classifier_config(
    backbone={"model_channels": 32, "num_heads": 2, "context_dim": 16},
    vae={"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1},
    cond={"origin_dim": 8, "embed_dim": 16},
)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter and BatchNorm statistic, so that a load that skips any of them shows."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        scale = p[0].numel() ** -0.5 if p.dim() > 1 else 0.2  # fan-in scaling keeps activations finite
        centre = 1.0 if p.dim() == 1 and name.endswith("weight") else 0.0  # norm scales around 1
        p.copy_(torch.randn(p.shape, generator=g) * scale + centre)
    for name, b in module.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(torch.randn(b.shape, generator=g) * 0.1)
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=g) + 0.5)
        elif name.endswith("num_batches_tracked"):
            b.fill_(4321)
    return module


def small_cavp(seed: int = 0) -> CAVPVideoEncoder:
    return randomize_(CAVPVideoEncoder(**CAVP_SMALL), seed).eval()


def audio_branch_keys(seed: int = 0) -> dict[str, torch.Tensor]:
    """A few tensors named like CAVP's Cnn14 audio branch and its logit scale."""
    g = torch.Generator().manual_seed(seed)
    return {"spec_encoder.bn.weight": torch.randn(128, generator=g),
            "spec_encoder.conv_block1.conv1.weight": torch.randn(64, 1, 3, 3, generator=g),
            "spec_encoder.final_project.weight": torch.randn(512, 2048, generator=g),
            "logit_scale": torch.tensor(2.6593)}


def save_cavp_file(model: CAVPVideoEncoder, path: Path, *, audio_branch: bool = True) -> dict[str, torch.Tensor]:
    """Save like CAVP's OpenCLIP training loop under DDP; returns the saved state dict."""
    sd = dict(model.state_dict())
    if audio_branch:
        sd.update(audio_branch_keys())
    sd = {f"module.{k}": v for k, v in sd.items()}
    atomic_torch_save({"epoch": 66, "name": "cavp", "state_dict": sd, "optimizer": {"param_groups": [{"lr": 8e-4}]}},
                      path)
    return sd


def save_lightning_file(state_dict: dict[str, torch.Tensor], path: Path, epoch: int) -> None:
    """Save like PyTorch Lightning 1.2: the weights plus pickled, non-tensor hyper-parameters."""
    atomic_torch_save({"epoch": epoch, "global_step": 1000 * epoch, "pytorch-lightning_version": "1.2.10",
                       "state_dict": state_dict, "hyper_parameters": argparse.Namespace(base_learning_rate=1e-4),
                       "optimizer_states": [], "lr_schedulers": []}, path)


def small_ldm(seed: int = 0) -> DiffFoleyLDM:
    return randomize_(build_ldm(LDM_SMALL), seed).eval()


def small_classifier(seed: int = 0) -> AlignmentClassifier:
    return randomize_(AlignmentClassifier(CLASSIFIER_SMALL), seed).eval()


def write_released_folder(folder: Path) -> dict[str, Path]:
    """The three released files (small models) under their released names."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"cavp": folder / "cavp_epoch66.ckpt", "ldm": folder / "ldm_epoch240.ckpt",
             "eval_classifier": folder / "eval_classifier.ckpt"}
    save_cavp_file(small_cavp(), paths["cavp"])
    save_lightning_file(ldm_state_dict(small_ldm()), paths["ldm"], 240)
    save_lightning_file(align_classifier_state_dict(small_classifier()), paths["eval_classifier"], 12)
    return paths


def small_panns(seed: int = 0) -> Cnn14:
    model = Cnn14(**PANNS_SMALL)
    front = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("conv_real.weight",
                                                                                 "conv_imag.weight", "melW"))}
    randomize_(model, seed)
    model.load_state_dict(front, strict=False)  # keep the STFT / mel buffers real, as in the released file
    return model.eval()


def small_vggish(seed: int = 0) -> VGGish:
    return randomize_(VGGish(**VGGISH_SMALL), seed).eval()


def write_real_tier_checkpoints(folder: Path) -> dict[str, Path]:
    """All five files the real tier names, small models conditioned on CAVP's 512-d features, under their
    released names (the notebooks' VGGSound runs use them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"cavp": folder / "cavp_epoch66.ckpt", "ldm": folder / "ldm_epoch240.ckpt",
             "eval_classifier": folder / "eval_classifier.ckpt", "panns": folder / "Cnn14_16k_mAP=0.438.pth",
             "vggish": folder / "vggish-10086976.pth"}
    save_cavp_file(small_cavp(), paths["cavp"])
    save_lightning_file(ldm_state_dict(randomize_(build_ldm(LDM_CAVP), 1).eval()), paths["ldm"], 240)
    save_lightning_file(align_classifier_state_dict(randomize_(AlignmentClassifier(CLASSIFIER_CAVP), 2).eval()),
                        paths["eval_classifier"], 12)
    torch.save({"model": small_panns(3).state_dict()}, paths["panns"])
    torch.save(small_vggish(4).state_dict(), paths["vggish"])
    return paths


#: loader keywords of the small models, as a papermill JSON parameter gives them (lists, not tuples)
REAL_TIER_OPTIONS = {"cavp": {**CAVP_SMALL, "stage_blocks": list(CAVP_SMALL["stage_blocks"])},
                     "ldm": {"config": LDM_CAVP}, "eval_classifier": {"config": CLASSIFIER_CAVP},
                     "panns": PANNS_SMALL, "vggish": {**VGGISH_SMALL, "channels": list(VGGISH_SMALL["channels"])}}
