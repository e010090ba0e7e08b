"""The event loop ``serve`` runs on: uvloop when it is installed, else asyncio's own.

``EVENT_LOOP`` (``Settings.event_loop``) chooses: ``auto`` (uvloop if it can be imported, asyncio
otherwise), ``uvloop`` (an error if it is not installed) or ``asyncio``. uvloop is a dependency on
Linux (``setup.cfg``); elsewhere ``auto`` quietly means asyncio.

The choice is made per loop, through ``asyncio.Runner(loop_factory=...)``: no global event loop
policy is installed, so nothing else in the process (the command-line tools, the test suite's
loops) changes loop because ``serve`` was imported.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .config import EVENT_LOOPS, ConfigError

__all__ = ["ASYNCIO_LOOP", "EVENT_LOOPS", "describe", "loop_factory", "run"]

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# asyncio's own loop, whatever event loop policy is set (asyncio.EventLoop from Python 3.13 on).
if sys.platform == "win32":
    ASYNCIO_LOOP: LoopFactory = asyncio.ProactorEventLoop
else:
    ASYNCIO_LOOP = asyncio.SelectorEventLoop


def _uvloop() -> Any | None:
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def loop_factory(choice: str) -> LoopFactory:
    """The factory of new event loops for ``choice`` (one of ``EVENT_LOOPS``)."""
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}")
    if choice == "asyncio":
        return ASYNCIO_LOOP
    uvloop = _uvloop()
    if uvloop is not None:
        return uvloop.new_event_loop
    if choice == "uvloop":
        raise ConfigError(
            "EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop, Linux and macOS), "
            "or set EVENT_LOOP=asyncio"
        )
    return ASYNCIO_LOOP


def describe(loop: asyncio.AbstractEventLoop, choice: str) -> str:
    """What the start-up line says: the loop that runs (not the one asked for) and why."""
    if type(loop).__module__.split(".")[0] == "uvloop":
        uvloop = _uvloop()
        name = f"uvloop {getattr(uvloop, '__version__', '?')}"
    else:
        name = "asyncio"
    return f"{name} (EVENT_LOOP={choice})"


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on a loop of the ``choice`` kind."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
