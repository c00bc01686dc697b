"""Diff-Foley's audio-visual alignment classifier (the Align Acc metric), from ``eval_classifier.ckpt``.

``Alignment_Classifier_metric`` scores whether a mel matches a video: the mel (repeated to 3 channels)
goes through its own AutoencoderKL (``first_stage_model.*``), ``z = 0.18215 · sample``; the CAVP features
(B, T, 512) through a :class:`~cinefoley.models.conditioning.VideoFeatEmbedder` 512 -> 512 with 40 positions
(``cond_model.*``); then ``Classifier_Backbone`` (``model.*``) at t = 0 gives P(aligned). Align Acc is the
fraction of generated clips with P > 0.5 (evaluation/align_acc.py: ``round(p) == 1``).

``Classifier_Backbone`` is the encoder half of an openai/SD UNet (input blocks and the middle block,
with SpatialTransformer cross-attention to the video context) followed by ``out`` (GroupNorm, SiLU,
conv 256 -> 128), a global average pool, ``classifier`` (Linear 128 -> 1) and a sigmoid; config
``model_channels 128, channel_mult [1, 2, 2], num_res_blocks 1, attention_resolutions [2, 4],
num_heads 8, context_dim 512`` (evaluation/config/eval_classifier.yaml). It is built here from
diffusers' UNet blocks, and its keys are converted with diffusers' ``convert_ldm_unet_checkpoint``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block
from torch import nn

from cinefoley.models.checkpoints import KeyReport, StateDictSource, compare_keys, read_state_dict, require
from cinefoley.models.conditioning import VideoFeatEmbedder
from cinefoley.models.ldm import (
    assign_weights,
    build_vae,
    check_schedule,
    load_vae_weights,
    schedule_buffers,
    shape_mismatches,
    unet_keys_to_ldm,
    vae_state_dict_to_ldm,
)

BACKBONE_PREFIX = "model."
# Classifier_Backbone arguments in the yaml that do not change the network built here: an unused size,
# gradient checkpointing, and flags this re-implementation fixes (SpatialTransformer attention; ``legacy``
# only matters with ``num_head_channels``).
_NO_EFFECT_KEYS = ("image_size", "use_checkpoint", "use_spatial_transformer", "legacy")
VAE_PREFIX = "first_stage_model."
COND_PREFIX = "cond_model."

#: Diff-Foley's ``evaluation/config/eval_classifier.yaml`` (the parts that shape the model).
EVAL_CLASSIFIER_CONFIG = {
    "model": {
        "target": "diff_foley.modules.double_guidance.alignment_classifier_metric.Alignment_Classifier_metric",
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "timesteps": 1000,
            "scale_factor": 0.18215,
            "first_stage_config": {
                "target": "diff_foley.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": 4,
                    "ddconfig": {
                        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                        "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                },
            },
            "classifier_config": {
                "target": "diff_foley.modules.double_guidance.alignment_backbone.Classifier_Backbone",
                "params": {
                    "in_channels": 4, "out_channels": 1, "model_channels": 128, "attention_resolutions": [2, 4],
                    "num_res_blocks": 1, "channel_mult": [1, 2, 2], "num_heads": 8,
                    "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 512,
                },
            },
            "cond_stage_config": {
                "target": "diff_foley.modules.cond_stage.video_feat_encoder.Video_Feat_Encoder_Posembed",
                "params": {"origin_dim": 512, "embed_dim": 512, "seq_len": 40},
            },
        },
    }
}


def eval_classifier_config(*, backbone: Mapping | None = None, vae: Mapping | None = None,
                           cond: Mapping | None = None, **model_params) -> dict:
    """A copy of :data:`EVAL_CLASSIFIER_CONFIG` with overrides (``backbone``: ``classifier_config.params``)."""
    cfg = copy.deepcopy(EVAL_CLASSIFIER_CONFIG)
    params = cfg["model"]["params"]
    params.update(model_params)
    params["classifier_config"]["params"].update(backbone or {})
    params["first_stage_config"]["params"]["ddconfig"].update(vae or {})
    params["cond_stage_config"]["params"].update(cond or {})
    return cfg


class AlignmentBackbone(nn.Module):
    """Diff-Foley's ``Classifier_Backbone``: (z (B, 4, h, w), t, context (B, T, C)) -> P(aligned) (B, 1).

    Attribute names follow diffusers' ``UNet2DConditionModel`` (``conv_in``, ``down_blocks``,
    ``mid_block``, ``conv_norm_out``, ``conv_out``), so diffusers' converter maps the original keys
    (``input_blocks``, ``middle_block``, ``out.0``, ``out.2``) onto them; ``classifier`` keeps its name.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 1, model_channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: tuple[int, ...] = (2, 4), num_heads: int = 8, context_dim: int = 512,
                 transformer_depth: int = 1):
        super().__init__()
        self.layers_per_block = num_res_blocks
        time_dim = 4 * model_channels
        # openai's timestep_embedding is [cos, sin] with frequencies exp(-ln(1e4)·i/half)
        self.time_proj = Timesteps(model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(model_channels, time_dim)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        widths = [model_channels * m for m in channel_mult]
        self.down_blocks = nn.ModuleList()
        ch = model_channels
        for level, width in enumerate(widths):
            attention = 2**level in attention_resolutions
            self.down_blocks.append(get_down_block(
                "CrossAttnDownBlock2D" if attention else "DownBlock2D", num_layers=num_res_blocks,
                in_channels=ch, out_channels=width, temb_channels=time_dim,
                add_downsample=level != len(widths) - 1, resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=32,
                transformer_layers_per_block=transformer_depth, num_attention_heads=num_heads,
                attention_head_dim=width // num_heads, cross_attention_dim=context_dim, downsample_padding=1))
            ch = width
        self.mid_block = UNetMidBlock2DCrossAttn(
            ch, time_dim, resnet_eps=1e-5, resnet_groups=32, num_attention_heads=num_heads,
            cross_attention_dim=context_dim, transformer_layers_per_block=transformer_depth)
        self.conv_norm_out = nn.GroupNorm(32, ch, eps=1e-5)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch, ch // 2, 3, padding=1)
        self.classifier = nn.Linear(ch // 2, out_channels)

    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        emb = self.time_embedding(self.time_proj(t.expand(z.shape[0])).to(z.dtype))
        h = self.conv_in(z)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(h, emb, encoder_hidden_states=context)
            else:
                h, _ = block(h, emb)
        h = self.mid_block(h, emb, encoder_hidden_states=context)
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        return torch.sigmoid(self.classifier(h.mean(dim=(2, 3))))


class AlignmentClassifier(nn.Module):
    """The Align-Acc classifier: ``vae`` (its own first stage), ``cond`` (c -> context), ``backbone``."""

    def __init__(self, config: Mapping | None = None):
        super().__init__()
        self.config = copy.deepcopy(dict(EVAL_CLASSIFIER_CONFIG if config is None else config))
        params = self.config["model"]["params"]
        self.scale_factor = float(params["scale_factor"])
        self.vae = build_vae(self.config)
        cond = params["cond_stage_config"]["params"]
        self.cond = VideoFeatEmbedder(cond["origin_dim"], cond["embed_dim"], cond["seq_len"])
        self.backbone = AlignmentBackbone(**{k: v for k, v in params["classifier_config"]["params"].items()
                                             if k not in _NO_EFFECT_KEYS})
        self.key_report: KeyReport | None = None

    @torch.no_grad()
    def align_prob(self, mel: torch.Tensor, video_feat: torch.Tensor, *, sample: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """P(aligned) (B,) of mels (B, 128, 512) in [0, 1] and CAVP features (B, 32, 512).

        As in evaluation/align_acc.py the latent is a posterior sample (``sample=False``: its mean) and
        t = 0. Unbatched (128, N) / (T, 512) inputs give a 0-d tensor.
        """
        single = mel.dim() == 2
        mel, video_feat = (mel[None], video_feat[None]) if single else (mel, video_feat)
        dtype = next(self.parameters()).dtype
        dist = self.vae.encode(mel[:, None].repeat(1, 3, 1, 1).to(dtype)).latent_dist
        z = (dist.sample(generator) if sample else dist.mode()) * self.scale_factor
        t = torch.zeros((), dtype=torch.long, device=z.device)
        p = self.backbone(z, t, self.cond(video_feat.to(dtype)))[:, 0]
        return p[0] if single else p


def align_classifier_state_dict(model: AlignmentClassifier) -> dict[str, torch.Tensor]:
    """The classifier in Diff-Foley's checkpoint layout (``model.*``, ``first_stage_model.*``, ``cond_model.*``)."""
    params = model.config["model"]["params"]
    sd = model.backbone.state_dict()
    head = {k: v for k, v in sd.items() if k.startswith("classifier.")}
    names = unet_keys_to_ldm([k for k in sd if k not in head], model.backbone.layers_per_block)
    out = {BACKBONE_PREFIX + names.get(k, k): v for k, v in sd.items()}
    out.update({VAE_PREFIX + k: v for k, v in vae_state_dict_to_ldm(model.vae).items()})
    out.update({COND_PREFIX + k: v for k, v in model.cond.state_dict().items()})
    out.update(schedule_buffers(params["linear_start"], params["linear_end"], params["timesteps"]))
    out["scale_factor"] = torch.tensor(model.scale_factor)
    return out


def load_align_classifier(source: StateDictSource, config: Mapping | None = None) -> AlignmentClassifier:
    """An :class:`AlignmentClassifier` (eval mode) from an ``eval_classifier.ckpt``-format file or state dict.

    Every ``model.*``, ``first_stage_model.*`` and ``cond_model.*`` key must be used; the schedule
    buffers and ``scale_factor`` in the file must match the config.
    """
    state = read_state_dict(source)
    with torch.device("meta"):
        model = AlignmentClassifier(config)
    params = model.config["model"]["params"]
    schedule_keys = check_schedule(state, source, params)

    backbone_sd = model.backbone.state_dict()
    head = {k: v for k, v in backbone_sd.items() if k.startswith("classifier.")}
    names = unet_keys_to_ldm([k for k in backbone_sd if k not in head], model.backbone.layers_per_block)
    expected = {BACKBONE_PREFIX + v: None for v in names.values()}
    expected.update({BACKBONE_PREFIX + k: v.shape for k, v in head.items()})
    expected.update({COND_PREFIX + k: v.shape for k, v in model.cond.state_dict().items()})
    others = {k: v for k, v in state.items() if not k.startswith(VAE_PREFIX) and k not in schedule_keys}
    report = compare_keys(others, expected)
    require(report, source, "Diff-Foley's alignment classifier")

    # diffusers' converter reads UNet keys under the LDM prefix
    as_unet = {"model.diffusion_model." + k[len(BACKBONE_PREFIX):]: v for k, v in state.items()
               if k.startswith(BACKBONE_PREFIX) and not k.startswith(BACKBONE_PREFIX + "classifier.")}
    converted = convert_ldm_unet_checkpoint(as_unet, {"layers_per_block": model.backbone.layers_per_block})
    converted.update({k: state[BACKBONE_PREFIX + k] for k in head})
    report.mismatched = shape_mismatches(converted, backbone_sd,
                                          {**{k: BACKBONE_PREFIX + v for k, v in names.items()},
                                           **{k: BACKBONE_PREFIX + k for k in head}})
    require(report, source, "Diff-Foley's alignment classifier")
    assign_weights(model.backbone, converted)
    assign_weights(model.cond, {k[len(COND_PREFIX):]: v for k, v in state.items() if k.startswith(COND_PREFIX)})
    report = report.merge(load_vae_weights(model.vae, state, VAE_PREFIX, source))
    report.used += len(schedule_keys)
    model.key_report = report
    return model.eval()
