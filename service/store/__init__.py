"""Data access: one module per collection family, async functions taking ``db`` first.

Only these modules and ``service/db.py`` name collections or import the driver. This package
module holds what the rest of the service shares with the store layer without importing any of
its modules: the ``Db`` type and the test users' openid prefix.
"""

from __future__ import annotations

from typing import Any

from pymongo import WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError

__all__ = ["TEST_OPENID_PREFIX", "Db", "is_outage", "journaled"]

# The database as every store function takes it (documents are plain dicts).
Db = AsyncDatabase[dict[str, Any]]

# The dashboard simulator's fake users: their data is marked (``test_user``) and can be wiped.
TEST_OPENID_PREFIX = "sim-"


def is_outage(error: BaseException) -> bool:
    """A database error that means "unreachable or too slow", not "this request is wrong"."""
    return isinstance(error, ConnectionFailure) or (
        isinstance(error, PyMongoError) and error.timeout
    )


def journaled(db: Db, name: str) -> AsyncCollection[dict[str, Any]]:
    """Collection ``name`` whose writes wait for the journal (``j: true``), keeping the rest of
    the connection's write concern (``w=majority`` from ``MONGODB_URI`` on a replica set).

    For the writes behind an answer WeChat has received (the message, the survey step, a spool
    replay): they must survive a crash of the database right after the answer.
    """
    coll = db[name]
    concern = dict(coll.write_concern.document)
    concern["j"] = True
    return coll.with_options(write_concern=WriteConcern(**concern))
