"""``cinefoley study create|serve|status|analyze|export``: the coordinator's commands.

``register(subparsers)`` adds them to the main ``cinefoley`` parser; each subcommand sets ``func``,
which takes the parsed arguments and returns an exit code. ``python -m cinefoley.study.cli`` runs
them on their own.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``study`` and its five subcommands to an argparse ``subparsers`` object."""
    study = subparsers.add_parser("study", help="A/B preference study (Table 2): create, serve, status, analyze, export",
                                  description="A/B preference study of the paper's Table 2.")
    commands = study.add_subparsers(dest="study_command", required=True, metavar="COMMAND")

    p = commands.add_parser("create", help="create a study folder from a CSV of pairs (clip_id, baseline, ours)")
    p.add_argument("pairs_csv", help="CSV with columns clip_id, baseline, ours (mp4 paths, relative to the CSV)")
    p.add_argument("study_dir", help="folder to create (must not hold a study yet)")
    p.add_argument("--seed", type=int, default=0, help="seed of every participant's order and sides (default 0)")
    p.add_argument("--catch", type=int, default=0, dest="n_catch",
                   help="catch trials per participant: a clip against the same pictures with another clip's sound")
    p.add_argument("--baseline-name", default="Diff-Foley", help="name of the baseline in the analysis")
    p.add_argument("--ours-name", default="Ours", help="name of our system in the analysis")
    p.add_argument("--min-play", type=float, default=0.9, dest="min_play_fraction",
                   help="share of each clip a participant must play before voting (default 0.9)")
    p.set_defaults(func=_create)

    p = commands.add_parser("serve", help="serve the participant page (Voilà) and print participant links")
    p.add_argument("study_dir")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8866)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--participants", type=int, default=20, help="print links for p01..pNN (default 20)")
    who.add_argument("--ids", help="comma-separated participant ids to print links for")
    p.add_argument("--public-url", help="address participants use to reach the server (e.g. behind a proxy)")
    p.add_argument("--log", help="write Voilà's log to this file")
    p.set_defaults(func=_serve)

    p = commands.add_parser("status", help="who has answered how much")
    p.add_argument("study_dir")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_status)

    p = commands.add_parser("analyze", help="Table 2, binomial test, Wilson interval, breakdowns, exclusions")
    p.add_argument("study_dir")
    p.add_argument("--min-catch-accuracy", type=float, default=1.0,
                   help="exclude participants passing a smaller share of catch trials (default 1.0: all)")
    p.add_argument("--out", help="also write table2.csv, per_participant.csv, per_clip.csv, analysis.json here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_analyze)

    p = commands.add_parser("export", help="write all raw votes to a CSV")
    p.add_argument("study_dir")
    p.add_argument("csv_path")
    p.set_defaults(func=_export)
    return study


def _create(args) -> int:
    from cinefoley.errors import MediaError
    from cinefoley.study.design import create_study

    try:
        study = create_study(args.pairs_csv, args.study_dir, seed=args.seed, n_catch=args.n_catch,
                             baseline_name=args.baseline_name, ours_name=args.ours_name,
                             min_play_fraction=args.min_play_fraction)
    except (MediaError, ValueError, FileNotFoundError, FileExistsError) as e:  # the coordinator's slip, said plainly
        print(f"cinefoley study create: {e}", file=sys.stderr)
        return 2
    print(f"created study {study.name!r} in {study.folder}: {len(study.clips)} clips, "
          f"{len(study.catch)} catch trials, {study.n_trials} trials per participant")
    return 0


def _serve(args) -> int:
    from cinefoley.study.serve import serve_study

    ids = [s.strip() for s in args.ids.split(",") if s.strip()] if args.ids else args.participants
    return serve_study(args.study_dir, ip=args.ip, port=args.port, participants=ids,
                       public_url=args.public_url, log_path=args.log)


def _status(args) -> int:
    from cinefoley.study.results import study_status

    status = study_status(args.study_dir)
    table = status.pop("participants")
    if args.json:
        print(json.dumps({**status, "participants": table.to_dict(orient="records")}, indent=2))
        return 0
    print(f"study {status['study']!r}: {status['participants_finished']}/{status['participants_seen']} "
          f"participants finished, {status['test_votes']} test votes, {status['catch_votes']} catch votes, "
          f"{status['trials_per_participant']} trials each")
    if len(table):
        print(table.to_string(index=False))
    return 0


def _analyze(args) -> int:
    from cinefoley.study.results import analyze_study

    result = analyze_study(args.study_dir, min_catch_accuracy=args.min_catch_accuracy, out_dir=args.out)
    s = result.summary
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"Table 2 ({s['votes']} votes, {s['participants_included']} of {s['participants']} participants)")
    print(result.table.to_string())
    p = s["binomial_p_two_sided"]
    print(f"share preferring {s['systems']['ours']}: "
          + (f"{s['share_ours']:.4f}, Wilson {100 * s['confidence']:.0f}% CI [{s['wilson_low']:.4f}, "
             f"{s['wilson_high']:.4f}], two-sided binomial p = {p:.3g}" if s["votes"] else "n/a (no votes)"))
    print(f"excluded by catch trials: {', '.join(s['excluded']) or 'none'}")
    print("\nper participant:\n" + result.per_participant.to_string())
    print("\nper clip:\n" + result.per_clip.to_string())
    return 0


def _export(args) -> int:
    from cinefoley.study.results import export_votes

    print(export_votes(args.study_dir, args.csv_path))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cinefoley.study.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
