"""The design of the A/B preference study (the paper's Table 2): pairs, catch trials, trial plans.

A study lives in one folder::

    study.json        the design below (system names stay here, on the server)
    media/<token>.mp4 every stimulus, re-encoded (see ``media.py``) under a name that means nothing
    votes.sqlite      the votes (see ``store.py``)

Each participant sees every clip once as a *test* trial: the baseline's sound (Diff-Foley in the
paper) on one side, ours on the other, A on the left, B on the right. The trial order and the sides
are drawn from the participant id, so a participant who comes back gets the same sequence, and the
sides are balanced within a participant (as many baseline-left as baseline-right trials, up to one).
Optional *catch* trials show one clip with its own sound against the same pictures with another
clip's sound; choosing the unrelated sound marks an inattentive participant.
"""

from __future__ import annotations

import csv
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cinefoley.errors import MediaError
from cinefoley.study.media import probe, transcode
from cinefoley.study.store import VoteStore
from cinefoley.utils import atomic_write_json, stable_hash

STUDY_FILE = "study.json"
VOTES_FILE = "votes.sqlite"
PAIRS_COLUMNS = ("clip_id", "baseline", "ours")
TEST, CATCH = "test", "catch"
BASELINE, OURS = "baseline", "ours"  # option names of a test trial
MATCH, MISMATCH = "match", "mismatch"  # option names of a catch trial
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Pair:
    """One row of the pairs CSV: two generated versions of the same source video."""

    clip_id: str
    baseline: Path
    ours: Path


@dataclass(frozen=True)
class Trial:
    """One screen of the study: option ``a`` is played as A (left), option ``b`` as B (right)."""

    index: int
    kind: str  # TEST or CATCH
    item: str  # clip id (test) or catch id (catch)
    a: str  # BASELINE/OURS (test) or MATCH/MISMATCH (catch)
    b: str


@dataclass
class Study:
    """A created study; system names and media paths never leave this object for the page."""

    folder: Path
    name: str
    seed: int
    systems: dict[str, str]  # {"baseline": "Diff-Foley", "ours": "Ours"}: display names for the analysis
    clips: list[dict]  # {"clip_id", "baseline", "ours", "duration", ...}; media paths relative to folder
    catch: list[dict] = field(default_factory=list)  # {"catch_id", "clip_id", "audio_from", "match", "mismatch"}
    min_play_fraction: float = 0.9
    fingerprint: str = ""  # hash of the pairs and settings the study was made from
    created_at: str = ""

    @classmethod
    def load(cls, folder: str | Path) -> "Study":
        folder = Path(folder)
        path = folder / STUDY_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no study here (create one with `cinefoley study create`)")
        data = json.loads(path.read_text())
        return cls(folder=folder, **{k: v for k, v in data.items() if k != "format"})

    @property
    def db_path(self) -> Path:
        return self.folder / VOTES_FILE

    @property
    def n_trials(self) -> int:
        return len(self.clips) + len(self.catch)

    def media_path(self, trial: Trial, side: str) -> Path:
        """The stimulus file shown on ``side`` ("a" or "b") of ``trial``."""
        option = trial.a if side == "a" else trial.b
        rows = self.clips if trial.kind == TEST else self.catch
        key = "clip_id" if trial.kind == TEST else "catch_id"
        row = next(r for r in rows if r[key] == trial.item)
        return self.folder / row[option]

    def plan(self, participant: str) -> list[Trial]:
        """The participant's trial sequence, drawn reproducibly from the study seed and the id."""
        check_participant_id(participant)
        rng = random.Random(stable_hash(self.seed, "plan", participant))
        clip_ids = [c["clip_id"] for c in self.clips]
        rng.shuffle(clip_ids)
        half = len(clip_ids) // 2
        baseline_first = [True] * half + [False] * half
        if len(clip_ids) % 2:
            baseline_first.append(rng.random() < 0.5)
        rng.shuffle(baseline_first)
        items = [(TEST, c, (BASELINE, OURS) if first else (OURS, BASELINE))
                 for c, first in zip(clip_ids, baseline_first)]
        for row in self.catch:  # never first, so the first screen is an ordinary one
            sides = (MATCH, MISMATCH) if rng.random() < 0.5 else (MISMATCH, MATCH)
            items.insert(rng.randint(1, len(items)), (CATCH, row["catch_id"], sides))
        return [Trial(i, kind, item, a, b) for i, (kind, item, (a, b)) in enumerate(items)]

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("folder")
        return {"format": 1, **data}


def check_participant_id(participant: str) -> str:
    """Participant ids go into links and the database: 1–64 letters, digits, ``_ . -``."""
    if not isinstance(participant, str) or not PARTICIPANT_ID.fullmatch(participant):
        raise ValueError(f"invalid participant id {participant!r}: use 1-64 letters, digits, '_', '.', '-'")
    return participant


def participant_ids(n: int, prefix: str = "p") -> list[str]:
    """``p01 … pNN``: the ids a coordinator hands out when none are given."""
    width = max(2, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def read_pairs(csv_path: str | Path) -> list[Pair]:
    """Read the pairs CSV (``clip_id, baseline, ours``; paths relative to the CSV's folder)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: pairs CSV not found")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PAIRS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; expected {list(PAIRS_COLUMNS)}")
        pairs, seen = [], set()
        for line, row in enumerate(reader, start=2):
            clip_id = (row["clip_id"] or "").strip()
            if not clip_id:
                raise ValueError(f"{csv_path}:{line}: empty clip_id")
            if clip_id in seen:
                raise ValueError(f"{csv_path}:{line}: clip_id {clip_id!r} appears twice")
            seen.add(clip_id)
            files = []
            for column in ("baseline", "ours"):
                path = Path((row[column] or "").strip())
                path = path if path.is_absolute() else csv_path.parent / path
                if not path.is_file():
                    raise MediaError(path, f"{column} file of clip {clip_id!r} not found ({csv_path}:{line})")
                files.append(path)
            pairs.append(Pair(clip_id, *files))
    if len(pairs) < 1:
        raise ValueError(f"{csv_path}: no pairs")
    return pairs


def create_study(pairs_csv: str | Path, folder: str | Path, *, seed: int = 0, n_catch: int = 0,
                 baseline_name: str = "Diff-Foley", ours_name: str = "Ours", min_play_fraction: float = 0.9,
                 name: str | None = None, exist_ok: bool = False) -> Study:
    """Create a study folder from a pairs CSV; every stimulus is re-encoded under a neutral name.

    Both files of every pair must show the same pictures (:func:`cinefoley.study.pairs.check_pairs`): a row
    that pairs two different videos is refused, naming the row and what differs.

    Stimuli become H.264 + 16 kHz mono AAC (the rate both systems generate at), with each clip's
    frame rate and size kept.

    ``n_catch`` catch trials are added to every participant's plan. With ``exist_ok`` an existing
    study made from the same pairs and settings is returned as it is (its votes are kept); one made
    differently raises ``FileExistsError`` rather than mixing votes of two designs.
    """
    from cinefoley.study.pairs import check_pairs  # here: the participants' kernels import this module, not torch

    folder = Path(folder)
    pairs = read_pairs(pairs_csv)
    check_pairs(pairs, pairs_csv)
    if not 0 <= n_catch <= len(pairs) or (n_catch and len(pairs) < 2):
        raise ValueError(f"n_catch={n_catch}: need 0 <= n_catch <= {len(pairs)} clips (and >= 2 clips for catch trials)")
    if not 0 < min_play_fraction <= 1:
        raise ValueError(f"min_play_fraction={min_play_fraction} must be in (0, 1]")
    recipe = {"pairs": [[p.clip_id, str(p.baseline.resolve()), str(p.ours.resolve())] for p in pairs],
              "seed": seed, "n_catch": n_catch, "systems": [baseline_name, ours_name],
              "min_play_fraction": min_play_fraction}
    fingerprint = f"{stable_hash(json.dumps(recipe, sort_keys=True)):016x}"
    if (folder / STUDY_FILE).exists():
        existing = Study.load(folder)
        if exist_ok and existing.fingerprint == fingerprint:
            return existing
        raise FileExistsError(f"{folder / STUDY_FILE}: a study already exists here"
                              + (" and was made from other pairs or settings" if exist_ok else ""))

    def media(*key: str) -> str:
        return f"media/{stable_hash(seed, 'media', *key):016x}.mp4"

    clips = []
    for p in pairs:
        row = {"clip_id": p.clip_id, BASELINE: media(p.clip_id, BASELINE), OURS: media(p.clip_id, OURS)}
        for option, src in ((BASELINE, p.baseline), (OURS, p.ours)):
            transcode(src, folder / row[option])
        row["duration"] = round(probe(folder / row[OURS])["duration"], 3)
        row["sources"] = {BASELINE: str(p.baseline), OURS: str(p.ours)}
        clips.append(row)

    rng = random.Random(stable_hash(seed, "catch"))
    catch = []
    for k, i in enumerate(sorted(rng.sample(range(len(pairs)), n_catch))):
        j = rng.choice([x for x in range(len(pairs)) if x != i])
        system = rng.choice([BASELINE, OURS])  # either system's sound, so catches favour neither
        row = {"catch_id": f"catch-{k + 1}", "clip_id": pairs[i].clip_id, "audio_from": pairs[j].clip_id,
               "system": system, MATCH: clips[i][system], MISMATCH: media(pairs[i].clip_id, "catch", str(k))}
        transcode(folder / clips[i][system], folder / row[MISMATCH], audio_src=folder / clips[j][system])
        catch.append(row)

    study = Study(folder=folder, name=name or folder.name, seed=seed,
                  systems={BASELINE: baseline_name, OURS: ours_name}, clips=clips, catch=catch,
                  min_play_fraction=min_play_fraction, fingerprint=fingerprint,
                  created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    VoteStore(study.db_path).close()  # the database exists, in WAL mode, before any participant connects
    atomic_write_json(folder / STUDY_FILE, study.to_json())  # last: a crash leaves no half-made study
    return study
