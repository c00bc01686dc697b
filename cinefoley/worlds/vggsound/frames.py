"""The frame store: every clip's 4-fps frames decoded once, kept as WebDataset tar shards of JPEGs.

Diff-Foley re-encodes each VGGSound clip to 4 fps once before training; ``cinefoley vggsound frames``
does the same for the real tier. Each clip of a manifest is decoded once with
:func:`cinefoley.media.video.load_video` (4 fps from the manifest's ``start_s``, the manifest's
``n_frames`` or the 4-fps frames of the video, at most ``MAX_FRAMES`` = 40) at the video's own
resolution, the frames the CU/CM recipe crops, and written as one WebDataset sample
(``<clip_id>.json`` with the manifest's row, the frame size and count, ``<clip_id>.000.jpg`` ...).

Layout of ``STORE/``:

* ``frames-000000.tar`` ... : ``clips_per_shard`` clips each, in manifest order; plain tar, readable by
  ``webdataset.WebDataset`` or ``tar``.
* ``frames-000000.json`` ... : the shard's index, written after its tar and so the mark that the shard is
  finished: per clip, where its sample lies in the tar (one read gets a clip) and its size and length;
  the clips that could not be decoded, with the reason.
* ``unreadable.csv`` (clip_id, video_path, reason) and ``store.json``: sizes (bytes per clip, the whole
  of VGGSound extrapolated) and how the store was made.

Why JPEG at quality 95 without chroma subsampling (4:4:4): PNG is lossless but, measured on 640x360
textured synthetic clips, 2.8x the bytes of this JPEG (19.5 vs 7.0 MB per 40-frame clip) and 20x slower
to encode; JPEG decodes in a few ms a frame on a CPU core and on the GPU (nvJPEG through
``torchvision.io.decode_jpeg``). 4:2:0 JPEG is 23 % smaller but subsamples the colour again on top of
H.264's 4:2:0 (max error 57 vs 18 grey levels at native size). The tolerance against decoding the mp4
is stated in :data:`JPEG_TOLERANCE` and tested.

Shards are written atomically (temporary name, then rename), so a killed run leaves only finished
shards; a rerun skips them. Shards are written by ``workers`` processes in parallel.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from cinefoley.errors import MediaError
from cinefoley.progress import progress_bar
from cinefoley.utils import atomic_write_json
from cinefoley.worlds.vggsound.manifest import (FPS, MAX_FRAMES, UNREADABLE_COLUMNS, read_rows, resolve_path,
                                                start_of, write_csv)

STORE_FILE = "store.json"
JPEG_QUALITY = 95
CLIPS_PER_SHARD = 64
#: VGGSound's list: ~183 k train + ~15.4 k test clips; what store.json extrapolates its size to.
VGGSOUND_CLIPS = 199_000
#: Frames read from the store vs decoded from the mp4 (uint8, JPEG q95 4:4:4): largest and mean absolute
#: difference at native size and after the squash-resize to 224 that CAVP sees. Bounds for frames of pixel
#: noise (tests/synthetic_vggsound.py, measured 19 / 2.5 native, 17 / 1.5 at 224: JPEG's worst case, and
#: small frames upsampled to 224 keep their error); 640x360 textured video measured 18 / 2.1 native and
#: 4 / 0.5 at 224.
JPEG_TOLERANCE = {"native_max": 24, "native_mean": 3.0, "cavp_input_max": 24, "cavp_input_mean": 2.0}


def shard_name(index: int, suffix: str = "tar") -> str:
    return f"frames-{index:06d}.{suffix}"


# ----------------------------------------------------------------------------------------------
# writing


def encode_jpeg(frame: torch.Tensor, quality: int = JPEG_QUALITY) -> bytes:
    """One uint8 (3, H, W) frame as JPEG, 4:4:4 (PIL: torchvision's encoder always subsamples colour)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _frame_count(row: pd.Series, video: Path) -> int:
    """The manifest's ``n_frames`` (test manifests), else the 4-fps frames of the video, at most MAX_FRAMES."""
    from cinefoley.worlds.vggsound.testsets import clip_frames, probe_video

    if row.get("n_frames", ""):
        return int(row["n_frames"])
    n = clip_frames(probe_video(video).duration_s, start_of(row))
    if n < 1:
        raise MediaError(video, f"no {FPS:g}-fps frame after {start_of(row):.3f} s")
    return n


def _write_shard(out: Path, index: int, rows: list[dict], root: Path, quality: int) -> dict:
    """Decode the clips of ``rows`` and write shard ``index`` (tar, then its index). Returns the index."""
    import webdataset as wds

    from cinefoley.media.video import load_video

    torch.set_num_threads(1)  # the shards' processes are the parallelism
    tar_path = out / shard_name(index)
    tmp = tar_path.with_name(f".{tar_path.name}.partial")
    clips, unreadable = {}, []
    try:
        with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0) as sink:
            for row in rows:
                video = resolve_path(root, row["video_path"])
                try:
                    n = _frame_count(pd.Series(row), video)
                    frames = load_video(video, fps=FPS, n_frames=n, start=start_of(row))
                except MediaError as e:
                    unreadable.append({"clip_id": row["clip_id"], "video_path": row["video_path"],
                                       "reason": e.reason})
                    continue
                h, w = frames.shape[-2:]
                meta = {**row, "height": int(h), "width": int(w), "n_frames": len(frames), "fps": FPS}
                sample = {"__key__": row["clip_id"], "json": json.dumps(meta).encode()}
                sample.update({f"{t:03d}.jpg": encode_jpeg(frame, quality) for t, frame in enumerate(frames)})
                sink.write(sample)
                clips[row["clip_id"]] = {"n_frames": len(frames), "height": int(h), "width": int(w),
                                         "start_s": start_of(row)}
        _add_spans(tmp, clips)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(tar_path)
    record = {"shard": tar_path.name, "clip_ids": [r["clip_id"] for r in rows], "bytes": tar_path.stat().st_size,
              "clips": clips, "unreadable": unreadable}
    atomic_write_json(out / shard_name(index, "json"), record)
    return record


def _add_spans(tar_path: Path, clips: dict[str, dict]) -> None:
    """Record where each clip's members lie in the tar: ``span`` = [offset, length] (members are consecutive)."""
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key = member.name.split(".", 1)[0]
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE  # with its padding
            span = clips[key].setdefault("span", [member.offset, end - member.offset])
            span[1] = end - span[0]


@dataclass
class StoreReport:
    """What :func:`write_frame_store` did, and the store's size."""

    out_dir: Path
    summary: dict

    def __str__(self) -> str:
        s = self.summary
        return (f"{s['clips']} clips in {s['shards']} shards ({s['shards_written_now']} written now), "
                f"{s['unreadable']} unreadable (listed in {self.out_dir / 'unreadable.csv'}); "
                f"{s['bytes_per_clip'] / 1e6:.2f} MB per clip, all of VGGSound ≈ "
                f"{s['vggsound_extrapolated_bytes'] / 1e12:.2f} TB; store in {self.out_dir}")


def write_frame_store(manifest: str | Path, out_dir: str | Path, *, workers: int = 4,
                      clips_per_shard: int = CLIPS_PER_SHARD, quality: int = JPEG_QUALITY,
                      progress: bool = True) -> StoreReport:
    """Decode every clip of ``manifest`` once into ``out_dir``'s shards (see the module docstring).

    Finished shards are kept: a rerun writes only the missing ones. A finished shard made from other
    clips (the manifest changed) is an error naming it, not silently mixed in.
    """
    manifest, out = Path(manifest), Path(out_dir)
    df, root = read_rows(manifest)
    dotted = df["clip_id"][df["clip_id"].str.contains(".", regex=False)]
    if len(dotted):  # WebDataset keys end at the first dot of a member's name
        raise ValueError(f"{manifest}: clip id {dotted.iloc[0]!r} contains '.', which a WebDataset key cannot")
    rows = df.to_dict("records")
    plan = [rows[i:i + clips_per_shard] for i in range(0, len(rows), clips_per_shard)]
    out.mkdir(parents=True, exist_ok=True)
    records, todo = {}, []
    for i, shard_rows in enumerate(plan):
        index_path = out / shard_name(i, "json")
        if index_path.is_file() and (out / shard_name(i)).is_file():
            record = json.loads(index_path.read_text())
            if record["clip_ids"] != [r["clip_id"] for r in shard_rows]:
                raise ValueError(f"{index_path}: this finished shard holds other clips than {manifest} puts there; "
                                 "the store was made from another manifest; write to a new folder")
            records[i] = record
        else:
            todo.append(i)
    if todo:
        with ProcessPoolExecutor(max(1, min(workers, len(todo)))) as pool:
            futures = {i: pool.submit(_write_shard, out, i, plan[i], root, quality) for i in todo}
            for i in progress_bar(todo, desc="frame store shards", disable=not progress):
                records[i] = futures[i].result()
    summary = _summary(manifest, out, [records[i] for i in range(len(plan))], quality, written_now=len(todo))
    write_csv(out / "unreadable.csv",
              pd.DataFrame([u for r in records.values() for u in r["unreadable"]], columns=UNREADABLE_COLUMNS))
    atomic_write_json(out / STORE_FILE, summary)
    return StoreReport(out, summary)


def _summary(manifest: Path, out: Path, records: list[dict], quality: int, written_now: int) -> dict:
    clips = sum(len(r["clips"]) for r in records)
    frames = sum(c["n_frames"] for r in records for c in r["clips"].values())
    total = sum(r["bytes"] for r in records)
    per_clip = total / clips if clips else 0.0
    return {"format": "WebDataset tar shards; a sample per clip: <clip_id>.json (manifest row, height, width, "
                      "n_frames, fps) and <clip_id>.NNN.jpg (4-fps frames at native size)",
            "manifest": str(manifest.resolve()), "fps": FPS, "max_frames": MAX_FRAMES, "jpeg_quality": quality,
            "chroma": "4:4:4", "shards": len(records), "shards_written_now": written_now, "clips": clips,
            "unreadable": sum(len(r["unreadable"]) for r in records), "frames": frames, "bytes": total,
            "bytes_per_clip": per_clip, "bytes_per_frame": total / frames if frames else 0.0,
            "vggsound_clips": VGGSOUND_CLIPS, "vggsound_extrapolated_bytes": per_clip * VGGSOUND_CLIPS}


# ----------------------------------------------------------------------------------------------
# reading


def decode_frames(jpegs: list[bytes], device: str | torch.device = "cpu") -> torch.Tensor:
    """JPEG frames as uint8 (T, 3, H, W) on ``device`` (nvJPEG on a CUDA device, libjpeg on the CPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    return torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


class FrameStore:
    """Random access to a frame store by clip id: one read of its tar span per clip.

    A shard is opened for each read (VGGSound has thousands of shards, more than a process may keep
    open), so the store needs nothing re-opened in DataLoader workers or threads.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / STORE_FILE).is_file():
            raise FileNotFoundError(f"{self.root / STORE_FILE}: not a frame store; make one with "
                                    f"`cinefoley vggsound frames --manifest M --out {self.root}`")
        self.clips: dict[str, tuple[int, dict]] = {}
        self.unreadable: dict[str, str] = {}
        for path in sorted(self.root.glob("frames-*.json")):
            record = json.loads(path.read_text())
            shard = int(path.stem.split("-")[1])
            self.clips.update({cid: (shard, c) for cid, c in record["clips"].items()})
            self.unreadable.update({u["clip_id"]: u["reason"] for u in record["unreadable"]})

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.clips

    def __len__(self) -> int:
        return len(self.clips)

    def info(self, clip_id: str) -> dict:
        """What the index says of a clip the store holds: ``n_frames``, ``height``, ``width``, ``start_s``."""
        return self.clips[clip_id][1]

    def _read(self, shard: int, offset: int, length: int) -> bytes:
        with open(self.root / shard_name(shard), "rb", buffering=0) as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise MediaError(self.root / shard_name(shard), f"shard is truncated ({len(data)} of {length} bytes "
                                                            f"at {offset}); rewrite the store")
        return data

    def jpegs(self, clip_id: str, n_frames: int | None = None) -> list[bytes]:
        """The first ``n_frames`` (all when None) JPEG frames of a clip the store holds, as bytes."""
        shard, clip = self.clips[clip_id]
        n = clip["n_frames"] if n_frames is None else n_frames
        if n > clip["n_frames"]:
            raise MediaError(self.root / shard_name(shard), f"clip {clip_id} has {clip['n_frames']} 4-fps frames "
                                                            f"in the store, {n} were asked for")
        span = self._read(shard, *clip["span"])
        with tarfile.open(fileobj=io.BytesIO(span)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            return [tar.extractfile(members[f"{clip_id}.{t:03d}.jpg"]).read() for t in range(n)]

    def load(self, clip_id: str, video: str | Path, *, n_frames: int | None, start: float = 0.0,
             device: str | torch.device = "cpu") -> torch.Tensor:
        """The clip's 4-fps frames, uint8 (T, 3, H, W), as :func:`~cinefoley.media.video.load_video` gives them.

        From the store when it holds the clip from the same ``start``; a clip the store found
        unreadable raises its :class:`MediaError` without opening the video again; any other clip
        (a store made from another manifest) is decoded from ``video``.
        """
        if clip_id in self.clips and abs(self.clips[clip_id][1]["start_s"] - start) < 1e-6:
            return decode_frames(self.jpegs(clip_id, n_frames), device)
        if clip_id in self.unreadable:
            raise MediaError(Path(video), self.unreadable[clip_id])
        from cinefoley.media.video import load_video

        return load_video(video, fps=FPS, n_frames=n_frames, start=start).to(device)


def load_frames(store: FrameStore | None, clip_id: str, video: str | Path, *, n_frames: int | None,
                start: float = 0.0) -> torch.Tensor:
    """A clip's 4-fps frames from ``store`` when given (:meth:`FrameStore.load`), else decoded from ``video``."""
    if store is not None:
        return store.load(clip_id, video, n_frames=n_frames, start=start)
    from cinefoley.media.video import load_video

    return load_video(video, fps=FPS, n_frames=n_frames, start=start)


def open_store(path: str | Path | None) -> FrameStore | None:
    """The store at ``path``, None when no path is given."""
    return None if path is None else FrameStore(path)

