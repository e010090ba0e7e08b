"""Surveys over chat: definitions as YAML data, an engine that asks one question at a time.

``live_engine(settings, db)`` returns the ``SurveyEngine`` the bot router calls: it answers from
the published versions in the database (``catalog.SurveyCatalog``, followed live in every
process), after importing every ``*.yaml`` in ``settings.surveys_dir`` (default: this folder,
which ships ``baogan.yaml``, the 爆肝度调查). ``load_engine`` loads files only (tools, tests).
Aggregates for the dashboard live in ``service.store.surveys``.
"""

from __future__ import annotations

from .catalog import PublishResult, Snapshot, SurveyCatalog
from .engine import SurveyEngine, live_engine, load_engine
from .loader import (
    SHIPPED_DIR,
    Issue,
    SurveyLoadError,
    check_paths,
    load_dir,
    load_file,
    load_shipped,
)
from .model import Survey

__all__ = [
    "SHIPPED_DIR",
    "Issue",
    "PublishResult",
    "Snapshot",
    "Survey",
    "SurveyCatalog",
    "SurveyEngine",
    "SurveyLoadError",
    "check_paths",
    "live_engine",
    "load_dir",
    "load_engine",
    "load_file",
    "load_shipped",
]
