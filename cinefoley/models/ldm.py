"""Diff-Foley's latent diffusion model (Stage 2) in diffusers, loaded from the released ``ldm_epoch240.ckpt``.

The checkpoint is a CompVis/Lightning ``LatentDiffusion``: ``model.diffusion_model.*`` (an SD-v1 UNet,
context 768), ``first_stage_model.*`` (the SD AutoencoderKL), ``cond_stage_model.*`` (the conditioning
embedder, :class:`~cinefoley.models.conditioning.VideoFeatEmbedder`) and the noise-schedule buffers. The UNet
and VAE are converted with diffusers' single-file utilities
(``diffusers.loaders.single_file_utils``) into ``UNet2DConditionModel`` and ``AutoencoderKL``.

Facts reproduced (Diff-Foley ``inference/config/Stage2_LDM.yaml`` and the inference notebook):
the schedule is CompVis' "linear" (= diffusers' ``scaled_linear``) 0.00085-0.012 over 1000 steps with
eps prediction; latents are scaled by 0.18215; the mel (128 x 512, range [0, 1]) is repeated to 3
channels for the VAE and channel 0 of the decoding is the mel; a window is 32 video frames (8.192 s,
latent 4 x 16 x 64). The unconditional context of the released sampler is zeros *after* the
embedder; training dropped the raw features to zeros *before* it (both available).

Loading checks every key: missing, unexpected or mis-shaped ones raise
:class:`~cinefoley.models.checkpoints.KeyMismatchError`, and schedule buffers in the file must equal the
schedule built here. :func:`ldm_state_dict` writes a model back in the original key layout.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    DIFFUSERS_TO_LDM_MAPPING,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from torch import nn

from cinefoley.models.checkpoints import (
    KeyReport,
    StateDictSource,
    compare_keys,
    read_state_dict,
    require,
    source_name,
)
from cinefoley.models.conditioning import VideoFeatEmbedder
from cinefoley.errors import CheckpointError

#: Video frames per LDM window (8.192 s at 4 fps); the latent of a window is 4 x 16 x 64.
WINDOW_FRAMES = 32
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
COND_PREFIX = "cond_stage_model."

#: Diff-Foley's ``inference/config/Stage2_LDM.yaml`` (the parts that shape the model), as the
#: ``original_config`` dict diffusers' single-file utilities read.
DIFF_FOLEY_LDM_CONFIG = {
    "model": {
        "target": "diff_foley.models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "timesteps": 1000,
            "beta_schedule": "linear",
            "parameterization": "eps",
            "num_timesteps_cond": 1,
            "image_size": 64,
            "channels": 4,
            "conditioning_key": "crossattn",
            "scale_factor": 0.18215,
            "use_ema": False,
            "unet_config": {
                "target": "diff_foley.modules.diffusionmodules.openai_unetmodel.UNetModel",
                "params": {
                    "image_size": 32,
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_heads": 8,
                    "use_spatial_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": 768,
                    "use_checkpoint": True,
                    "legacy": False,
                },
            },
            "first_stage_config": {
                "target": "diff_foley.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": 4,
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                },
            },
            "cond_stage_config": {
                "target": "diff_foley.modules.cond_stage.video_feat_encoder.Video_Feat_Encoder_Posembed",
                "params": {"origin_dim": 512, "embed_dim": 768, "seq_len": 40},
            },
        },
    }
}

#: The same schedule for diffusers' schedulers (``DDPMScheduler(**NOISE_SCHEDULE)`` etc.).
NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}

#: The persistent buffers CompVis' ``DDPM.register_schedule`` saves with every checkpoint.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def diff_foley_ldm_config(*, unet: Mapping | None = None, vae: Mapping | None = None,
                          cond: Mapping | None = None, **model_params) -> dict:
    """A copy of :data:`DIFF_FOLEY_LDM_CONFIG` with overrides (e.g. a small model for tests).

    ``unet`` updates ``unet_config.params``, ``vae`` the VAE's ``ddconfig``, ``cond`` the embedder's
    params and keywords the top-level params (``scale_factor``, ``timesteps``, ...).
    """
    cfg = copy.deepcopy(DIFF_FOLEY_LDM_CONFIG)
    params = cfg["model"]["params"]
    params.update(model_params)
    params["unet_config"]["params"].update(unet or {})
    params["first_stage_config"]["params"]["ddconfig"].update(vae or {})
    params["cond_stage_config"]["params"].update(cond or {})
    return cfg


def schedule_buffers(linear_start: float = 0.00085, linear_end: float = 0.012,
                     timesteps: int = 1000) -> dict[str, torch.Tensor]:
    """CompVis' schedule buffers for the "linear" schedule (linspace of sqrt(beta), squared; float64 -> float32)."""
    betas = np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32) for k in SCHEDULE_BUFFERS}


def check_schedule(state: Mapping[str, torch.Tensor], source: StateDictSource, params: Mapping) -> list[str]:
    """Verify the schedule buffers present in ``state`` against ``params``; returns the keys checked.

    Absent buffers are fine (they are derived, not learned); present ones that differ raise.
    """
    expected = schedule_buffers(params["linear_start"], params["linear_end"], params["timesteps"])
    if "scale_factor" in state:
        expected["scale_factor"] = torch.tensor(float(params["scale_factor"]))
    present = [k for k in expected if k in state]
    for key in present:
        got = state[key].float()
        if got.shape != expected[key].shape or not torch.allclose(got, expected[key], rtol=1e-4, atol=1e-6):
            raise CheckpointError(source_name(source),
                                  f"buffer {key!r} does not match the schedule built from the config "
                                  f"(linear {params['linear_start']}-{params['linear_end']}, "
                                  f"{params['timesteps']} steps, scale factor {params['scale_factor']})")
    return present


# ----------------------------------------------------------------------------------------------
# diffusers -> original key names (the inverse of diffusers' convert_ldm_*_checkpoint)

_RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_keys_to_ldm(keys: Iterable[str], layers_per_block: int) -> dict[str, str]:
    """``{diffusers UNet key: CompVis UNet key}`` (openai ``input_blocks`` / ``middle_block`` / ``output_blocks``).

    Works for any prefix-free subset of a ``UNet2DConditionModel`` layout (the alignment classifier's
    encoder half uses it too). Down block ``b`` takes input blocks ``1 + b(L+1) .. (b+1)(L+1)`` with its
    downsampler last; up block ``b`` takes output blocks ``b(L+1) ..``, its upsampler after the attention.
    """
    keys = list(keys)
    n = layers_per_block + 1
    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    up_with_attention = {int(m[1]) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for key in keys:
        if key in top:
            out[key] = top[key]
        elif m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)", key):
            b, j = int(m[2]), int(m[3])
            block = f"input_blocks.{1 + b * n + j}" if m[1] == "down" else f"output_blocks.{b * n + j}"
            out[key] = f"{block}.0.{_RESNET_TO_LDM[m[4]]}.{m[5]}"
        elif m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            b, j = int(m[2]), int(m[3])
            block = f"input_blocks.{1 + b * n + j}" if m[1] == "down" else f"output_blocks.{b * n + j}"
            out[key] = f"{block}.1.{m[4]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            out[key] = f"input_blocks.{(int(m[1]) + 1) * n}.0.op.{m[2]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            b = int(m[1])
            out[key] = f"output_blocks.{b * n + n - 1}.{2 if b in up_with_attention else 1}.conv.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(\w+)\.(weight|bias)", key):
            out[key] = f"middle_block.{2 * int(m[1])}.{_RESNET_TO_LDM[m[2]]}.{m[3]}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            out[key] = f"middle_block.1.{m[1]}"
        else:
            raise ValueError(f"no CompVis name for UNet key {key!r}")
    return out


def vae_keys_to_ldm(keys: Iterable[str], num_blocks: int) -> dict[str, str]:
    """``{diffusers AutoencoderKL key: CompVis AutoencoderKL key}`` (``encoder.down.i.block.j``, ``mid.attn_1``, ...).

    The decoder's up blocks are numbered in reverse in CompVis (``up.{num_blocks-1-i}``).
    """
    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    out = {}
    for key in keys:
        if key in top:
            out[key] = top[key]
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)", key):
            out[key] = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}.{m[4]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            out[key] = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)", key):
            i = num_blocks - 1 - int(m[1])
            out[key] = f"decoder.up.{i}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}.{m[4]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            out[key] = f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+)\.(weight|bias)", key):
            out[key] = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}.{m[4]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)"
                               r"\.(weight|bias)", key):
            out[key] = f"{m[1]}.mid.attn_1.{_VAE_ATTN_TO_LDM[m[2]]}.{m[3]}"
        else:
            raise ValueError(f"no CompVis name for VAE key {key!r}")
    return out


def vae_state_dict_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """The VAE's weights under CompVis names; the mid attention's linear weights become 1x1 convs."""
    sd = vae.state_dict()
    names = vae_keys_to_ldm(sd, len(vae.config.block_out_channels))
    out = {}
    for key, value in sd.items():
        if ".mid_block.attentions.0." in key and key.endswith("weight") and value.dim() == 2:
            value = value[:, :, None, None]
        out[names[key]] = value
    return out


def build_vae(config: Mapping) -> AutoencoderKL:
    """A randomly initialised SD-style ``AutoencoderKL`` shaped by ``first_stage_config``."""
    return AutoencoderKL(**create_vae_diffusers_config_from_ldm(config, {}))


def load_vae_weights(vae: AutoencoderKL, state: Mapping[str, torch.Tensor], prefix: str,
                     source: StateDictSource) -> KeyReport:
    """Load ``prefix``-ed CompVis VAE weights into ``vae`` with diffusers' converter; every key must match."""
    names = vae_keys_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    part = {k: v for k, v in state.items() if k.startswith(prefix)}
    report = compare_keys(part, {prefix + v: None for v in names.values()})
    require(report, source, f"the VAE ({prefix}*)")
    converted = convert_ldm_vae_checkpoint(part, dict(vae.config))
    report.mismatched = shape_mismatches(converted, vae.state_dict(), {k: prefix + v for k, v in names.items()})
    require(report, source, f"the VAE ({prefix}*)")
    assign_weights(vae, converted)
    return report


def assign_weights(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` (keys already checked) as float32 tensors, replacing meta-device parameters too."""
    module.load_state_dict({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()},
                           assign=True)


def shape_mismatches(converted: Mapping[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor],
                     names: Mapping[str, str]) -> list[tuple[str, tuple, tuple]]:
    """(original name, file shape, model shape) of each converted tensor whose shape differs from the model's."""
    return [(names[k], tuple(converted[k].shape), tuple(v.shape))
            for k, v in model_sd.items() if tuple(converted[k].shape) != tuple(v.shape)]


# ----------------------------------------------------------------------------------------------


class DiffFoleyLDM(nn.Module):
    """Diff-Foley's Stage-2 model: ``unet`` (eps-prediction), ``vae``, ``cond`` (c -> context) and the schedule.

    ``uncond_zeros`` picks the unconditional context for classifier-free guidance:
    ``"after_embedder"`` (zeros of shape (B, T, 768), the released sampler) or ``"before_embedder"``
    (the embedding of zero features, the condition dropped during training). ``noise_schedule`` holds
    the keyword arguments of a diffusers scheduler with the model's training schedule.
    """

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, cond: VideoFeatEmbedder, config: Mapping,
                 uncond_zeros: Literal["after_embedder", "before_embedder"] = "after_embedder"):
        super().__init__()
        if uncond_zeros not in ("after_embedder", "before_embedder"):
            raise ValueError(f"uncond_zeros must be 'after_embedder' or 'before_embedder', got {uncond_zeros!r}")
        self.unet, self.vae, self.cond = unet, vae, cond
        self.config = copy.deepcopy(dict(config))
        params = self.config["model"]["params"]
        self.scale_factor = float(params["scale_factor"])
        self.noise_schedule = dict(NOISE_SCHEDULE, num_train_timesteps=params["timesteps"],
                                   beta_start=params["linear_start"], beta_end=params["linear_end"])
        self.uncond_zeros = uncond_zeros
        self.key_report: KeyReport | None = None

    @property
    def latent_geometry(self) -> tuple[int, int]:
        """(latent height, latent columns per video frame): the VAE downsamples 8×, a frame is 16 mel frames."""
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return 128 // down, 16 // down  # Diff-Foley's mel has 128 bins

    def context(self, feats: torch.Tensor, uncond: bool = False) -> torch.Tensor:
        """Cross-attention context of CAVP features (B, T, 512) -> (B, T, 768); ``uncond`` for CFG."""
        if not uncond:
            return self.cond(feats)
        if self.uncond_zeros == "before_embedder":
            return self.cond(torch.zeros_like(feats))
        out_dim = self.cond.embedder[0].out_features
        return feats.new_zeros(*feats.shape[:-1], out_dim)

    @torch.no_grad()
    def encode_mel(self, mel: torch.Tensor, *, sample: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Mel (B, n_mels, N) or (n_mels, N) in [0, 1] -> scaled latent (B, 4, n_mels/8, N/8).

        Like Diff-Foley, the latent is a sample of the VAE posterior (``sample=False``: its mean).
        """
        x = (mel[None] if mel.dim() == 2 else mel)[:, None].repeat(1, 3, 1, 1)
        dist = self.vae.encode(x.to(self._dtype())).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return z * self.scale_factor

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent (B, 4, h, w) -> mel (B, 8h, 8w): channel 0 of the decoding, not clipped."""
        return self.vae.decode(z.to(self._dtype()) / self.scale_factor).sample[:, 0]

    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype


def feature_windows(feats: torch.Tensor, frames: int = WINDOW_FRAMES) -> torch.Tensor:
    """Cut per-frame features (T, C) into Diff-Foley's generation windows (T // frames, frames, C).

    As in the inference notebook, the frames after the last whole window are dropped.
    """
    n = feats.shape[0] // frames
    if n == 0:
        raise ValueError(f"{feats.shape[0]} frames of features, fewer than one {frames}-frame window")
    return feats[: n * frames].reshape(n, frames, *feats.shape[1:])


def build_ldm(config: Mapping | None = None, **kwargs) -> DiffFoleyLDM:
    """A randomly initialised :class:`DiffFoleyLDM` shaped by ``config`` (default: Diff-Foley's)."""
    config = DIFF_FOLEY_LDM_CONFIG if config is None else config
    unet = UNet2DConditionModel(**create_unet_diffusers_config_from_ldm(config, {}))
    cond_params = config["model"]["params"]["cond_stage_config"]["params"]
    cond = VideoFeatEmbedder(cond_params["origin_dim"], cond_params["embed_dim"], cond_params["seq_len"])
    return DiffFoleyLDM(unet, build_vae(config), cond, config, **kwargs)


def ldm_state_dict(ldm: DiffFoleyLDM) -> dict[str, torch.Tensor]:
    """The model in Diff-Foley's checkpoint layout (``model.diffusion_model.*``, ..., schedule buffers)."""
    params = ldm.config["model"]["params"]
    unet_sd = ldm.unet.state_dict()
    names = unet_keys_to_ldm(unet_sd, ldm.unet.config.layers_per_block)
    out = {UNET_PREFIX + names[k]: v for k, v in unet_sd.items()}
    out.update({VAE_PREFIX + k: v for k, v in vae_state_dict_to_ldm(ldm.vae).items()})
    out.update({COND_PREFIX + k: v for k, v in ldm.cond.state_dict().items()})
    out.update(schedule_buffers(params["linear_start"], params["linear_end"], params["timesteps"]))
    return out


def load_ldm(source: StateDictSource, config: Mapping | None = None, **kwargs) -> DiffFoleyLDM:
    """A :class:`DiffFoleyLDM` (eval mode) from an ``ldm_epoch240.ckpt``-format file or state dict.

    Every ``model.diffusion_model.*``, ``first_stage_model.*`` and ``cond_stage_model.*`` key must be
    used and every weight must exist; schedule buffers in the file must match the config's schedule.
    """
    state = read_state_dict(source)
    with torch.device("meta"):  # no random initialisation of ~1e9 weights that are replaced anyway
        ldm = build_ldm(config, **kwargs)
    params = ldm.config["model"]["params"]
    schedule_keys = check_schedule(state, source, params)

    unet_names = unet_keys_to_ldm(ldm.unet.state_dict(), ldm.unet.config.layers_per_block)
    expected = {UNET_PREFIX + v: None for v in unet_names.values()}
    expected.update({COND_PREFIX + k: v.shape for k, v in ldm.cond.state_dict().items()})
    others = {k: v for k, v in state.items() if not k.startswith(VAE_PREFIX) and k not in schedule_keys}
    report = compare_keys(others, expected)
    require(report, source, "Diff-Foley's LDM")

    unet_sd = convert_ldm_unet_checkpoint(state, dict(ldm.unet.config))
    report.mismatched = shape_mismatches(unet_sd, ldm.unet.state_dict(),
                                          {k: UNET_PREFIX + v for k, v in unet_names.items()})
    require(report, source, "Diff-Foley's LDM")
    assign_weights(ldm.unet, unet_sd)
    assign_weights(ldm.cond, {k[len(COND_PREFIX):]: v for k, v in state.items() if k.startswith(COND_PREFIX)})
    report = report.merge(load_vae_weights(ldm.vae, state, VAE_PREFIX, source))
    report.used += len(schedule_keys)
    ldm.key_report = report
    return ldm.eval()
