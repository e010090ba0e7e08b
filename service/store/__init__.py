"""Data access: one module per collection family, async functions taking ``db`` first.

Only these modules and ``service/db.py`` name collections or import the driver. This package
module holds what the rest of the service shares with the store layer without importing any of
its modules: the ``Db`` type and the test users' openid prefix.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["TEST_OPENID_PREFIX", "Db"]

# The database as every store function takes it (documents are plain dicts).
Db = AsyncDatabase[dict[str, Any]]

# The dashboard simulator's fake users: their data is marked (``test_user``) and can be wiped.
TEST_OPENID_PREFIX = "sim-"
