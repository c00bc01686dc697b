"""CineToy's evaluation networks (paper §4), trained on real CineToy audio only, never on generated audio.

- ``AudioClassifier`` stands in for PANNs Cnn14: one clip embedding (post-ReLU fc1, Cnn14's "2048"
  output, here 256-d) for FD and KID, and class logits for KL and IS.
- ``FrameEmbedder`` stands in for VGGish: one 128-d pre-activation embedding per non-overlapping
  0.96 s of audio, for FAD. At hop 256 / 16 kHz a mel frame is 16 ms, so 0.96 s is exactly 60 mel
  frames; as in VGGish's framing, a remainder shorter than 0.96 s is dropped (a 2.048-s CineToy clip,
  128 mel frames, gives 2 embeddings; an 8.192-s clip, 512 frames, gives 8). It is trained as a
  frame-level classifier on the clip's label (VGGish, too, was trained on video-level labels).
- ``AlignmentClassifier`` stands in for Diff-Foley's evaluation classifier (Align Acc): (mel, per-frame
  video features (T, 512)) -> logit of p(aligned). Diff-Foley's repository does not give its pair recipe;
  this one (:func:`alignment_pairs`) makes it reject what Align Acc must reject, wrong timing and wrong
  class: half of the pairs are aligned, the rest, in equal shares, have the video rolled by
  >= ``min_shift`` frames, the sound delayed or advanced by 128-768 ms, another clip's video, or the same
  onsets played by another class (``other_class_mels``, rendered by the world). The 4-fps features do
  resolve less than a frame (0.25 s): an object's flash decays over ~0.2 s, so the frame after an onset
  says how long ago it was; the smallest sound shift, 128 ms, is half a frame. Every pair gets the same
  small noise on mel and features, so that generated sound, smoother than real sound, is not itself a cue.

All three flatten the mel axis after their conv trunks instead of averaging it, so that sounds that
differ only in pitch stay apart (see ``ToyAudioEncoder``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cinefoley.media.audio import shift_mels
from cinefoley.progress import progress_bar
from cinefoley.models.cinetoy.encoders import mel_trunk
from cinefoley.utils import seed_everything

VGGISH_FRAME_SECONDS = 0.96
MEL_FRAME_SECONDS = 256 / 16000


def _check_mel(mel: torch.Tensor, n_mels: int, min_frames: int) -> None:
    if mel.ndim != 3 or mel.shape[1] != n_mels or mel.shape[2] < min_frames:
        raise ValueError(f"expected a mel batch (B, {n_mels}, >= {min_frames} frames), "
                         f"got shape {tuple(mel.shape)}")


@dataclass
class AudioClassifierConfig:
    num_classes: int = 8
    n_mels: int = 128
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    embed_dim: int = 256


class AudioClassifier(nn.Module):
    """PANNs stand-in: mel (B, 128, N) -> ``embed`` (B, 256) post-ReLU, ``forward`` class logits (B, K).

    As in Cnn14, the time axis is reduced by max + mean pooling before fc1.
    """

    config_class = AudioClassifierConfig

    def __init__(self, config: AudioClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or AudioClassifierConfig()
        self.trunk = mel_trunk(config.widths)
        self.fc1 = nn.Linear(config.widths[-1] * (config.n_mels // 2 ** len(config.widths)), config.embed_dim)
        self.fc = nn.Linear(config.embed_dim, config.num_classes)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        _check_mel(mel, self.config.n_mels, 2 ** len(self.config.widths))
        x = self.trunk(mel.float().unsqueeze(1)).flatten(1, 2)      # (B, C * bands, steps)
        return F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(mel))


@dataclass
class FrameEmbedderConfig:
    num_classes: int = 8
    n_mels: int = 128
    frame_len: int = round(VGGISH_FRAME_SECONDS / MEL_FRAME_SECONDS)   # 60 mel frames = 0.96 s
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    embed_dim: int = 128


class FrameEmbedder(nn.Module):
    """VGGish stand-in: mel (B, 128, N) -> ``embed`` (B, N // 60, 128) pre-activation, ``forward`` logits."""

    config_class = FrameEmbedderConfig

    def __init__(self, config: FrameEmbedderConfig | None = None):
        super().__init__()
        self.config = config = config or FrameEmbedderConfig()
        shrink = 2 ** len(config.widths)
        self.trunk = mel_trunk(config.widths)
        self.fc1 = nn.Linear(config.widths[-1] * (config.n_mels // shrink) * (config.frame_len // shrink),
                             config.embed_dim)
        self.fc = nn.Linear(config.embed_dim, config.num_classes)

    def frames(self, mel: torch.Tensor) -> torch.Tensor:
        """Non-overlapping 0.96-s frames, (B, F, 128, 60); a shorter remainder is dropped."""
        n = self.config.frame_len
        _check_mel(mel, self.config.n_mels, n)
        count = mel.shape[2] // n
        return mel[..., : count * n].unflatten(2, (count, n)).transpose(1, 2)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        frames = self.frames(mel.float())
        b, f = frames.shape[:2]
        x = self.trunk(frames.flatten(0, 1).unsqueeze(1)).flatten(1)
        return self.fc1(x).reshape(b, f, -1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.embed(mel)))


@dataclass
class AlignmentClassifierConfig:
    n_mels: int = 128
    mel_frames_per_frame: int = 16
    feat_dim: int = 512
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    hidden: int = 128


class AlignmentClassifier(nn.Module):
    """Align Acc's classifier: (mel (B, 128, 16 T), video features (B, T, 512)) -> aligned logit (B,).

    The mel becomes one audio token per video frame (16 mel frames each), the features one video token
    per frame; two temporal convolutions read [audio, video, audio * video] and a max over time decides.
    """

    config_class = AlignmentClassifierConfig

    def __init__(self, config: AlignmentClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or AlignmentClassifierConfig()
        if config.mel_frames_per_frame != 2 ** len(config.widths):
            raise ValueError("mel_frames_per_frame must be 2 ** (number of conv blocks)")
        h = config.hidden
        self.trunk = mel_trunk(config.widths)
        self.audio_proj = nn.Linear(config.widths[-1] * (config.n_mels // config.mel_frames_per_frame), h)
        self.video_proj = nn.Linear(config.feat_dim, h)
        self.temporal = nn.Sequential(nn.Conv1d(3 * h, h, 3, padding=1), nn.ReLU(),
                                      nn.Conv1d(h, h, 3, padding=1), nn.ReLU())
        self.out = nn.Linear(h, 1)

    def forward(self, mel: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        hop = self.config.mel_frames_per_frame
        _check_mel(mel, self.config.n_mels, hop)
        if feats.ndim != 3 or mel.shape[2] != hop * feats.shape[1]:
            raise ValueError(f"mel of {mel.shape[2]} frames does not match features {tuple(feats.shape)} "
                             f"({hop} mel frames per feature frame)")
        a = self.audio_proj(self.trunk(mel.float().unsqueeze(1)).flatten(1, 2).transpose(1, 2))
        v = self.video_proj(feats.float())
        x = self.temporal(torch.cat([a, v, a * v], dim=-1).transpose(1, 2))
        return self.out(x.amax(dim=2)).squeeze(-1)


@dataclass
class EvaluatorTrainConfig:
    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    min_shift: int = 2      # alignment negatives: roll the video by min_shift .. T - min_shift frames ...
    sound_shift: tuple[int, int] = (8, 48)  # ... or move the sound by 8 .. 48 mel frames (128 .. 768 ms)
    mel_noise: float = 0.03     # std of the noise added to every mel in [0, 1] ...
    feature_noise: float = 0.1  # ... and to the features, relative to their std
    seed: int = 0
    device: str = "cpu"


#: The kinds of :func:`alignment_pairs`, in the order of their codes; the first is the only aligned one.
PAIR_KINDS = ("aligned", "video rolled", "sound moved", "another clip", "other class, same onsets")


def alignment_pairs(mels: torch.Tensor, feats: torch.Tensor, idx: torch.Tensor, cfg: "EvaluatorTrainConfig",
                    gen: torch.Generator, other_class_mels: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mel, features, label) for clips ``idx``: half aligned (label 1), the rest one of the other
    :data:`PAIR_KINDS` in equal shares (label 0); without ``other_class_mels`` its share goes to "another clip"."""
    n, t = len(mels), feats.shape[1]
    if not 0 < cfg.min_shift <= t - cfg.min_shift:
        raise ValueError(f"min_shift {cfg.min_shift} leaves no shift for {t} frames")
    b = len(idx)
    kind = torch.where(torch.rand(b, generator=gen) < 0.5, 0, torch.randint(1, len(PAIR_KINDS), (b,), generator=gen))
    if other_class_mels is None:
        kind = torch.where(kind == 4, 3, kind)
    other = (idx + torch.randint(1, n, (b,), generator=gen)) % n
    roll = torch.where(kind == 1, torch.randint(cfg.min_shift, t - cfg.min_shift + 1, (b,), generator=gen), 0)
    lo, hi = cfg.sound_shift
    sign = torch.randint(2, (b,), generator=gen) * 2 - 1
    shift = torch.where(kind == 2, sign * torch.randint(lo, hi + 1, (b,), generator=gen), 0)
    mel = mels[idx]
    if other_class_mels is not None:
        mel = torch.where((kind == 4)[:, None, None], other_class_mels[idx], mel)
    mel = shift_mels(mel, shift)
    frames = (torch.arange(t)[None] - roll[:, None]) % t
    feat = feats[torch.where(kind == 3, other, idx)[:, None], frames]
    mel = (mel + cfg.mel_noise * torch.randn(mel.shape, generator=gen)).clamp(0, 1)
    feat = feat + cfg.feature_noise * feats.std() * torch.randn(feat.shape, generator=gen)
    return mel, feat, (kind == 0).float()


def _fit(model: nn.Module, n: int, step_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
         cfg: EvaluatorTrainConfig, desc: str, progress: bool) -> dict[str, list[float]]:
    """AdamW with a cosine schedule over ``cfg.epochs``; returns the per-epoch mean training loss."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * -(-n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    history: dict[str, list[float]] = {"loss": []}
    model.train()
    with progress_bar(total=total, desc=desc, disable=not progress) as bar:
        for _ in range(cfg.epochs):
            total_loss = 0.0
            for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
                loss = step_loss(idx, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(idx)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
            history["loss"].append(total_loss / n)
    model.eval()
    return history


def _num_classes(labels: torch.Tensor, num_classes: int | None) -> int:
    return int(labels.max()) + 1 if num_classes is None else num_classes


def train_audio_classifier(mels: torch.Tensor, labels: torch.Tensor, cfg: EvaluatorTrainConfig | None = None,
                           num_classes: int | None = None, progress: bool = True
                           ) -> tuple[AudioClassifier, dict[str, list[float]]]:
    """Train the PANNs stand-in on real mels (N, 128, L) and class labels (N,)."""
    cfg = cfg or EvaluatorTrainConfig()
    seed_everything(cfg.seed)
    model = AudioClassifier(AudioClassifierConfig(num_classes=_num_classes(labels, num_classes),
                                                  n_mels=mels.shape[1])).to(cfg.device)

    def step_loss(idx, gen):
        return F.cross_entropy(model(mels[idx].to(cfg.device)), labels[idx].to(cfg.device))

    return model, _fit(model, len(mels), step_loss, cfg, "train audio classifier", progress)


def train_frame_embedder(mels: torch.Tensor, labels: torch.Tensor, cfg: EvaluatorTrainConfig | None = None,
                         num_classes: int | None = None, progress: bool = True
                         ) -> tuple[FrameEmbedder, dict[str, list[float]]]:
    """Train the VGGish stand-in as a per-0.96-s-frame classifier on the clip's label."""
    cfg = cfg or EvaluatorTrainConfig()
    seed_everything(cfg.seed)
    model = FrameEmbedder(FrameEmbedderConfig(num_classes=_num_classes(labels, num_classes),
                                              n_mels=mels.shape[1])).to(cfg.device)

    def step_loss(idx, gen):
        logits = model(mels[idx].to(cfg.device))                   # (B, F, K)
        target = labels[idx].to(cfg.device)[:, None].expand(-1, logits.shape[1])
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    return model, _fit(model, len(mels), step_loss, cfg, "train frame embedder", progress)


def train_alignment_classifier(mels: torch.Tensor, feats: torch.Tensor, cfg: EvaluatorTrainConfig | None = None,
                               progress: bool = True, other_class_mels: torch.Tensor | None = None
                               ) -> tuple[AlignmentClassifier, dict[str, list[float]]]:
    """Train the Align Acc classifier on real mels (N, 128, 16 T), their clips' features (N, T, 512) and, where
    the world can render them, the same onsets played by another class (N, 128, 16 T) (:func:`alignment_pairs`)."""
    cfg = cfg or EvaluatorTrainConfig()
    seed_everything(cfg.seed)
    model = AlignmentClassifier(AlignmentClassifierConfig(
        n_mels=mels.shape[1], feat_dim=feats.shape[2])).to(cfg.device)

    def step_loss(idx, gen):
        mel, feat, label = alignment_pairs(mels, feats, idx, cfg, gen, other_class_mels)
        return F.binary_cross_entropy_with_logits(model(mel.to(cfg.device), feat.to(cfg.device)),
                                                  label.to(cfg.device))

    return model, _fit(model, len(mels), step_loss, cfg, "train alignment classifier", progress)


@torch.no_grad()
def classification_accuracy(model: AudioClassifier | FrameEmbedder, mels: torch.Tensor,
                            labels: torch.Tensor, batch_size: int = 64) -> float:
    """Held-out accuracy: per clip for ``AudioClassifier``, per 0.96-s frame for ``FrameEmbedder``."""
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for mel, label in zip(mels.split(batch_size), labels.split(batch_size)):
        pred = model(mel.to(device)).argmax(-1).cpu()
        label = label if pred.ndim == 1 else label[:, None].expand_as(pred)
        correct += int((pred == label).sum())
        total += label.numel()
    return correct / total
