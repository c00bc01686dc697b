"""Self-distillation on VGGSound, streamed from the videos (paper §3.3 at the real tier).

VGGSound train (~183k clips of 40 frames at 224 px) does not fit in memory the way the CineToy clips
do, so :class:`StreamedPairs` decodes every clip when its batch comes up, and feeds the one loop of
:func:`cinefoley.distill.train_student`:

* :class:`VGGSoundDistillSet` reads one clip at 4 fps (from the frame store of
  :mod:`cinefoley.worlds.vggsound.frames` when ``frames`` names one, else
  :func:`cinefoley.media.video.load_video` on the mp4), draws
  its variation f_cu / f_cm with probability k from (seed, epoch, clip id), applies it at the video's
  native resolution and squash-resizes the result to CAVP's 224 px
  (:func:`~cinefoley.models.cavp.varied_input`) — exactly the path
  :func:`cinefoley.worlds.vggsound.features.extract_features` takes for VGG-CU / VGG-CM, so the student
  trains on what it is tested on. It pairs the clip with the teacher's cached c_t = T(x_v) of the
  *full* clip (``<clip_id>.npz``, key ``feat``, written by ``cinefoley vggsound features``).
* A ``torch.utils.data.DataLoader`` runs that decoding in ``num_workers`` processes, so it overlaps the
  student's step in the main process; under ``torchrun`` each rank decodes only its share of each batch.
  From a frame store on a CUDA device, the workers only read each clip's JPEGs and draw its variation;
  the device decodes them (nvJPEG) and crops and resizes there (``decode_on_device``), since CPU
  workers at a few clips/s per core cannot feed a step of hundreds of clips/s.

Clips whose video cannot be decoded, or that are shorter than ``n_frames``, are left out of their batch
and listed in ``out/unusable.csv``; clips that feature extraction already found unreadable are listed
there without being opened. A clip of the manifest with neither a feature file nor such an entry is an
error naming the file.

``n_frames`` (default 40, Diff-Foley's stored length for a 10-s clip) frames are decoded per clip and
trained against the first ``n_frames`` rows of c_t. CAVP's temporal convolutions pad at the edges of
the frames they see, so with a smaller ``n_frames`` than the features were extracted with, c_t's last
rows were computed with context the student does not get.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cinefoley.distill import DistillConfig, PairBatch, as_frames, read_feature, train_student
from cinefoley.distributed import barrier, rank_world
from cinefoley.errors import MediaError
from cinefoley.models.cavp import INPUT_SIZE, varied_input
from cinefoley.worlds.vggsound.frames import decode_frames, load_frames, open_store
from cinefoley.worlds.vggsound.manifest import MAX_FRAMES, read_rows, resolve_path, start_of


@dataclass
class StreamDistillConfig(DistillConfig):
    """:class:`~cinefoley.distill.DistillConfig` (f, k, a1/a2, AdamW, batch, epochs, seed) plus the data path.

    c_t always comes from the feature cache; the variations are applied clip by clip in the loader's
    workers.
    """

    split: str | None = "train"  # the manifest's rows to train on; None = all rows
    n_frames: int = MAX_FRAMES
    size: int = INPUT_SIZE
    num_workers: int = 4
    prefetch_factor: int = 2
    frames: str | None = None  # a frame store (`cinefoley vggsound frames`) to read instead of the mp4s
    decode_on_device: bool | None = None  # decode the store's JPEGs on ``device``; None: when it is CUDA

    def __post_init__(self):
        if self.n_frames < 1 or self.size < 1 or self.num_workers < 0:
            raise ValueError(f"need n_frames >= 1, size >= 1, num_workers >= 0; got {self.n_frames}, "
                             f"{self.size}, {self.num_workers}")


@dataclass(frozen=True)
class StreamClip:
    """One training clip: its video, where the 4-fps frames start, and its cached c_t."""

    clip_id: str
    video: Path
    start_s: float
    feature: Path


def stream_clips(manifest: str | Path, feature_dir: str | Path, *, split: str | None = "train"
                 ) -> tuple[list[StreamClip], list[dict]]:
    """The clips of ``manifest`` (rows of ``split``) with their feature files, and those left out.

    A clip listed in ``feature_dir/unreadable.csv`` (its video failed at feature extraction) is left
    out with that reason; any other clip without ``feature_dir/<clip_id>.npz`` raises
    ``FileNotFoundError`` naming the first missing file.
    """
    manifest, feature_dir = Path(manifest), Path(feature_dir)
    df, root = read_rows(manifest)
    if split is not None and "split" in df:
        df = df[df["split"] == split]
    if df.empty:
        raise ValueError(f"{manifest}: no clips{f' in split {split!r}' if split else ''}")
    failed_before = {}
    if (feature_dir / "unreadable.csv").is_file():
        prior = pd.read_csv(feature_dir / "unreadable.csv", dtype=str, keep_default_na=False)
        failed_before = dict(zip(prior["clip_id"], prior["reason"]))
    clips, skipped, missing = [], [], []
    for _, row in df.iterrows():
        cid, feature = row["clip_id"], feature_dir / f"{row['clip_id']}.npz"
        if feature.is_file():
            clips.append(StreamClip(cid, resolve_path(root, row["video_path"]), start_of(row), feature))
        elif cid in failed_before:
            skipped.append({"clip_id": cid, "video_path": row["video_path"],
                            "reason": f"unreadable at feature extraction: {failed_before[cid]}"})
        else:
            missing.append(feature)
    if missing:
        raise FileNotFoundError(
            f"{missing[0]}: no cached teacher feature c_t for this clip of {manifest} ({len(missing)} clips "
            f"lack one); write them with `cinefoley vggsound features --manifest {manifest} --out {feature_dir} --cavp ...`")
    return clips, skipped


class VGGSoundDistillSet(Dataset):
    """Training pairs (x_v^f or x_v, c_t) decoded on demand; indexed by ``(epoch, clip index)``.

    An item is ``{"index", "video": uint8 (n_frames, 3, size, size), "params": None, "c_t": float32
    (n_frames, C), "kind": "close_up" / "camera_move" / ""}``; when the device decodes the frame store,
    ``video`` is the clip's JPEG frames and ``params`` the variation to apply after decoding. A clip that
    cannot be used is ``{"index", "error": reason}`` (the loop skips and reports it).
    """

    def __init__(self, clips: list[StreamClip], cfg: StreamDistillConfig):
        self.clips, self.cfg = clips, cfg
        self.store = open_store(cfg.frames)
        on_device = str(cfg.device).startswith("cuda") if cfg.decode_on_device is None else cfg.decode_on_device
        self.jpegs_out = self.store is not None and on_device

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        clip, n = self.clips[i], self.cfg.n_frames
        c_t = read_feature(clip.feature)  # a broken cache is not the video's fault: it raises
        if len(c_t) < n:
            return {"index": i, "error": f"clip has {len(c_t)} 4-fps frames of features, the run needs {n}"}
        try:
            if self.jpegs_out and clip.clip_id in self.store:
                video = self.store.jpegs(clip.clip_id, n)  # decoded by StreamedPairs on the device
                h, w = self.store.info(clip.clip_id)["height"], self.store.info(clip.clip_id)["width"]
            else:
                video = load_frames(self.store, clip.clip_id, clip.video, n_frames=n, start=clip.start_s)
                h, w = video.shape[2:]
        except MediaError as e:
            return {"index": i, "error": e.reason}
        params = self.cfg.sampler.draw_for_clip(clip.clip_id, epoch, self.cfg.seed, n, h, w)
        kind = "" if params is None else params.kind
        if torch.is_tensor(video):
            video, params = varied_input(video, params, self.cfg.size), None  # nothing left to apply
        return {"index": i, "video": video, "params": params, "c_t": torch.from_numpy(c_t[:n]), "kind": kind}


def collate_pairs(items: list[dict]) -> dict:
    """Stack the usable clips of a batch; the others go to ``failed`` as ``(index, reason)``.

    ``video`` is a uint8 tensor, or, when some clips are still JPEGs, a list of ``(video, params)``.
    """
    ok = [it for it in items if "error" not in it]
    if all(torch.is_tensor(it["video"]) for it in ok):
        video = torch.stack([it["video"] for it in ok]) if ok else None
    else:
        video = [(it["video"], it["params"]) for it in ok]
    return {"video": video, "c_t": torch.stack([it["c_t"] for it in ok]) if ok else None,
            "failed": [(it["index"], it["error"]) for it in items if "error" in it]}


def on_device(video: torch.Tensor | list, device, size: int) -> torch.Tensor:
    """A collated ``video`` on ``device``: JPEG clips decoded and varied there, the others moved."""
    if torch.is_tensor(video):
        return video.to(device, non_blocking=True)
    return torch.stack([v.to(device) if torch.is_tensor(v) else varied_input(decode_frames(v, device), p, size)
                        for v, p in video])


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode in parallel; intra-op threads would only oversubscribe


class StreamedPairs:
    """The pair source of streamed distillation: each list of clip indices becomes one decoded batch."""

    def __init__(self, clips: list[StreamClip], cfg: StreamDistillConfig):
        self.clips, self.cfg = clips, cfg
        self.clip_ids = [c.clip_id for c in clips]
        self.input_shape = (cfg.n_frames, 3, cfg.size, cfg.size)
        self.dataset = VGGSoundDistillSet(clips, cfg)

    def batches(self, cfg: DistillConfig, epoch: int, index_lists: list[list[int]]) -> Iterator[PairBatch]:
        workers = self.cfg.num_workers
        # an empty share (more ranks than clips in a batch) still yields its (empty) batch
        loader = DataLoader(self.dataset, batch_sampler=[[(epoch, i) for i in idx] for idx in index_lists],
                            collate_fn=collate_pairs, num_workers=workers, worker_init_fn=_one_thread,
                            prefetch_factor=self.cfg.prefetch_factor if workers else None,
                            pin_memory=str(cfg.device).startswith("cuda"))
        for batch in loader:
            x = None if batch["video"] is None else as_frames(on_device(batch["video"], cfg.device, self.cfg.size))
            c_t = None if batch["c_t"] is None else batch["c_t"].to(cfg.device)
            yield PairBatch(x, c_t, batch["failed"])


def distill_vggsound(teacher: nn.Module, manifest: str | Path, feature_dir: str | Path, out_dir: str | Path,
                     cfg: StreamDistillConfig | None = None, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Distil a student S ← ``teacher`` (a loaded CAVP encoder) on the clips of ``manifest``; returns (S, history).

    c_t is read from ``feature_dir/<clip_id>.npz``. See :func:`cinefoley.distill.train_student` for what
    ``out_dir`` receives; ``student_state.pt`` loads with :func:`cinefoley.models.cavp.load_cavp`.
    """
    cfg = cfg or StreamDistillConfig()
    clips, skipped = stream_clips(manifest, feature_dir, split=cfg.split)
    if not clips:
        raise ValueError(f"{manifest}: no clip to train on; all {len(skipped)} were unreadable at feature extraction")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank_world()[0] == 0:
        _note_skipped(out_dir / "unusable.csv", skipped)
    barrier()  # train_student reads that list on every rank
    return train_student(teacher, StreamedPairs(clips, cfg), out_dir, cfg, progress=progress,
                         record={"manifest": str(manifest), "feature_dir": str(feature_dir),
                                 "skipped_before": len(skipped)})


def _note_skipped(path: Path, skipped: list[dict]) -> None:
    """Clips feature extraction found unreadable go into the run's ``unusable.csv`` before it starts."""
    from cinefoley.distill import UNUSABLE_COLUMNS
    from cinefoley.utils import atomic_write_bytes

    old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame(columns=UNUSABLE_COLUMNS)
    new = pd.DataFrame([{"clip_id": s["clip_id"], "reason": s["reason"]} for s in skipped], columns=UNUSABLE_COLUMNS)
    both = pd.concat([old, new]).drop_duplicates("clip_id", keep="first")
    atomic_write_bytes(path, both.to_csv(index=False).encode())
