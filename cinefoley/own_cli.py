"""``cinefoley foley`` and ``cinefoley evaluate``: the method on your own videos, the metrics on your own folders.

``register(subparsers)`` adds both to the main parser; the work is in :mod:`cinefoley.foley` and
:mod:`cinefoley.metrics.folders`, imported when a command runs (so ``--help`` stays fast).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cinefoley.errors import MediaError


def model_options(value: str | None) -> dict:
    """``--model-options``: JSON, inline or in a file: loader keywords per checkpoint kind (``cavp``, ``ldm``,
    ``eval_classifier``, ``panns``, ``vggish``), for other architectures than the released ones."""
    if not value:
        return {}
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text()
    except OSError as e:
        raise SystemExit(f"--model-options: neither JSON nor a readable file ({e})") from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--model-options: not JSON ({e})") from None
    for kind in ("cavp", "vggish"):  # JSON gives lists where the loaders take tuples
        for key in ("stage_blocks", "channels"):
            if key in options.get(kind, {}):
                options[kind][key] = tuple(options[kind][key])
    return options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "foley", help="sound for your own videos (CineToy's models by default; Diff-Foley's with --cavp/--ldm)",
        description="Generate sound for video files or folders of videos: per video an mp4 with its own pictures "
                    "and the new sound, the wav and the generator's mel; foley.json lists everything, failures "
                    "included. CineToy's shipped models know only CineToy's ten sounds.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, or folders searched for videos")
    p.add_argument("--out", required=True, help="folder for the outputs and foley.json")
    p.add_argument("--encoder", default="teacher", metavar="teacher|STUDENT",
                   help="'teacher' (the baseline: Diff-Foley's encoder; default) or a student checkpoint "
                        "(student_state.pt, or the distillation run folder holding it)")
    p.add_argument("--compare", metavar="STUDENT",
                   help="also generate with this student: both sounds per video, and pairs.csv for "
                        "`cinefoley study create`")
    p.add_argument("--samples", type=int, default=1, help="sounds per video and system (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, help="classifier-free guidance weight w (default 4.5, the paper's)")
    p.add_argument("--steps", type=int, help="DPM-Solver++ steps (default 25, the paper's)")
    p.add_argument("--start", type=float, default=0.0, help="seconds into each video where the sound starts")
    p.add_argument("--full", action="store_true",
                   help="the whole video (from --start) in overlapping windows, cross-faded; default: one window "
                        "(CineToy 2.048 s, Diff-Foley 8.192 s)")
    p.add_argument("--batch-size", type=int, help="windows per generator batch, across videos (default 32)")
    p.add_argument("--models", metavar="DIR", help="CineToy: a run's models/ folder instead of the shipped weights")
    real = p.add_argument_group("the real tier: Diff-Foley's files (GPU when present)")
    real.add_argument("--cavp", metavar="PATH", help="a cavp_epoch66.ckpt-format file: the teacher")
    real.add_argument("--ldm", metavar="PATH", help="a ldm_epoch240.ckpt-format file: the generator")
    real.add_argument("--model-options", metavar="JSON", help="loader keywords per kind (inline JSON or a file)")
    real.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.set_defaults(func=_foley)

    p = subparsers.add_parser(
        "evaluate", help="Table 1's six metrics with bootstrap intervals for two folders of audio",
        description="Score the sounds of --generated against --reference (files matched by name: <id>.<ext> or "
                    "<id>-s<k>.<ext>), and against --baseline (paired). Files that do not match, cannot be read "
                    "or differ in length are listed, never dropped silently; the exit status is 1 when any "
                    "generated file was left out.")
    p.add_argument("--generated", required=True, metavar="DIR")
    p.add_argument("--reference", required=True, metavar="DIR", help="the real sounds (audio files or videos)")
    p.add_argument("--out", required=True, metavar="DIR", help="scores.csv/.md, paired_diff.csv/.md, evaluate.json")
    p.add_argument("--baseline", metavar="DIR", help="a second generated folder: paired differences generated − it")
    align = p.add_mutually_exclusive_group()
    align.add_argument("--features", metavar="DIR", help="Align Acc: <id>.npy (T, C) or <id>.npz ('feat') per clip")
    align.add_argument("--videos", metavar="DIR", help="Align Acc: the clips' videos (<id>.<ext>), encoded here")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length-diff", type=float, default=0.3, metavar="SECONDS",
                   help="leave out a generated sound whose length differs more from its reference's (default 0.3)")
    p.add_argument("--models", metavar="DIR", help="CineToy: a run's models/ folder instead of the shipped weights")
    real = p.add_argument_group("the real referees: their files")
    real.add_argument("--panns", metavar="PATH", help="Cnn14_16k_mAP=0.438.pth: FD, KID, KL, IS")
    real.add_argument("--vggish", metavar="PATH", help="vggish-10086976.pth: FAD")
    real.add_argument("--eval-classifier", metavar="PATH", help="eval_classifier.ckpt: Align Acc")
    real.add_argument("--cavp", metavar="PATH", help="cavp_epoch66.ckpt: encodes --videos for Align Acc")
    real.add_argument("--model-options", metavar="JSON", help="loader keywords per kind (inline JSON or a file)")
    p.set_defaults(func=_evaluate)


def _foley(args) -> int:
    from cinefoley.errors import CheckpointError
    from cinefoley.foley import BASELINE, FoleySettings, foley, load_models, load_student, student_name

    options = model_options(args.model_options)
    given = {k: v for k, v in (("guidance", args.cfg), ("steps", args.steps), ("batch_size", args.batch_size))
             if v is not None}
    try:
        settings = FoleySettings(samples=args.samples, seed=args.seed, start=args.start, full=args.full, **given)
        teacher, generator, note = load_models(cavp=args.cavp, ldm=args.ldm, models_dir=args.models,
                                               options=options, device=args.device)
        encoders = {}
        for spec in [args.encoder] + ([args.compare] if args.compare else []):
            name = BASELINE if spec == "teacher" else student_name(spec)
            if name in encoders:
                raise ValueError(f"--encoder and --compare name the same system {name!r}")
            encoders[name] = teacher if spec == "teacher" else load_student(spec, teacher, **options.get("cavp", {}))
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"cinefoley foley: {e}", file=sys.stderr)
        return 2
    print(note, flush=True)
    started = time.time()
    run = foley(args.inputs, args.out, generator=generator, encoders=encoders, settings=settings, note=note,
                log=lambda line: print(line, flush=True))
    print(f"{len(run.done)} video(s) done, {len(run.failed)} failed, in {time.time() - started:.1f} s; "
          f"everything is listed in {run.record}")
    if run.pairs_csv is not None:
        print(f"pairs for the A/B study: {run.pairs_csv}  (next: cinefoley study create {run.pairs_csv} STUDY_DIR)")
    for failure in run.failed:
        print(f"FAILED {failure['input']}: {failure['reason']}", file=sys.stderr)
    print(f"note: {note}")
    return 1 if run.failed else 0


def _evaluate(args) -> int:
    from cinefoley.errors import CheckpointError
    from cinefoley.metrics.folders import evaluate_folders, format_scores, load_referees

    started = time.time()
    out = Path(args.out)
    try:
        referees, encoder, note = load_referees(
            models_dir=args.models, panns=args.panns, vggish=args.vggish, eval_classifier=args.eval_classifier,
            cavp=args.cavp, options=model_options(args.model_options), cache_dir=out / "cache", seed=args.seed)
        if args.videos and encoder is None:
            raise ValueError("--videos with the real referees needs the CAVP encoder (--cavp) to read them")
        print(note, flush=True)
        result = evaluate_folders(args.generated, args.reference, referees=referees, baseline=args.baseline,
                                  features=args.features, videos=args.videos, encoder=encoder, n_boot=args.n_boot,
                                  seed=args.seed, max_length_diff=args.max_length_diff,
                                  log=lambda line: print(line, flush=True))
    except (CheckpointError, MediaError, ValueError, FileNotFoundError) as e:
        print(f"cinefoley evaluate: {e}", file=sys.stderr)
        return 2
    config = {k: v for k, v in vars(args).items() if k != "func"}
    record = result.save(out, {**config, "referees": note}, started=started)
    print(format_scores(result))
    print(f"written: {out / 'scores.csv'}" + (f", {out / 'paired_diff.csv'}" if result.paired is not None else "")
          + f", {record}")
    if result.left_out:
        print(f"{result.left_out} generated file(s) left out of the scores (listed above and in {record})",
              file=sys.stderr)
    return 1 if result.left_out else 0

