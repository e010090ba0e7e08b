"""Surveys over chat: definitions as YAML data, an engine that asks one question at a time.

``load_engine(settings)`` loads every ``*.yaml`` in ``settings.surveys_dir`` (default: this folder,
which ships ``baogan.yaml``, the 爆肝度调查) and returns the ``SurveyEngine`` the bot router calls.
Aggregates for the dashboard live in ``service.store.surveys``.
"""

from __future__ import annotations

from .engine import SurveyEngine, load_engine
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
    "Survey",
    "SurveyEngine",
    "SurveyLoadError",
    "check_paths",
    "load_dir",
    "load_engine",
    "load_file",
    "load_shipped",
]
