"""The A/B listening study of the paper's Table 2: blinded pairs, votes that survive crashes, statistics.

Coordinators: ``create_study`` (from a CSV of ``clip_id, baseline, ours`` mp4 files), ``serve_study``
(Voilà page, one link per participant), ``study_status``, ``analyze_study`` and ``export_votes``; the
same as ``cinefoley study create|serve|status|analyze|export``. ``StudyApp`` is the participant's
widget, in a notebook or on the served page.

Names are imported on first use, so a participant's kernel loads the widget without pandas and SciPy.
"""

from importlib import import_module

_HOMES = {
    "make_demo_pairs": "demo",
    "Study": "design", "Trial": "design", "create_study": "design", "participant_ids": "design",
    "read_pairs": "design",
    "analyze_study": "results", "export_votes": "results", "load_votes": "results", "study_status": "results",
    "VoilaServer": "serve", "participant_links": "serve", "serve_study": "serve",
    "simulate_votes": "simulate",
    "Analysis": "stats", "analyze": "stats", "binomial_test": "stats", "preference_table": "stats",
    "wilson_interval": "stats",
    "VoteStore": "store",
    "StudyApp": "widget",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
