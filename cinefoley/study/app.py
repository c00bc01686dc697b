"""The participant page that Voilà serves: the study folder comes from the server, the id from the link.

``cinefoley study serve`` starts Voilà on ``participant.ipynb`` (this folder) with the study folder in
``CINEFOLEY_STUDY``; Voilà gives each visitor a kernel whose ``QUERY_STRING`` holds the link's query,
e.g. ``pid=p07``.
"""

from __future__ import annotations

import html
import os
from urllib.parse import parse_qs

import ipywidgets as widgets

from cinefoley.study.design import Study, check_participant_id
from cinefoley.study.widget import StudyApp

STUDY_ENV = "CINEFOLEY_STUDY"


def participant_app(study_dir: str | None = None, query: str | None = None) -> widgets.Widget:
    """The :class:`StudyApp` for the participant named by ``pid=`` in the link, or a short notice."""
    study_dir = study_dir or os.environ.get(STUDY_ENV)
    query = os.environ.get("QUERY_STRING", "") if query is None else query
    if not study_dir:
        return _notice(f"The study server was started without a study ({STUDY_ENV} is not set).")
    participant = parse_qs(query).get("pid", [""])[0]
    try:
        check_participant_id(participant)
    except ValueError:
        return _notice("This link has no valid participant id. Please use the personal link you were given.")
    return StudyApp(Study.load(study_dir), participant)


def _notice(text: str) -> widgets.HTML:
    return widgets.HTML(f"<p><b>{html.escape(text)}</b></p>")
