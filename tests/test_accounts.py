"""``service.accounts`` against the real database: logins, the throttle under a burst, passwords."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from service import accounts
from service.db import connect
from service.store import owners

NAME = "boss"
PASSWORD = "correct horse battery"
IP = "198.51.100.7"


@pytest.fixture
def boss(io_loop: Any, db: Any) -> dict[str, Any]:
    return io_loop.run_sync(lambda: owners.create(db, NAME, PASSWORD))


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification (``owners._verify``) still runs; this only counts them."""
    calls: list[str] = []
    real = owners._verify

    async def counting(hashed: str, password: str) -> bool:
        calls.append(password)
        return await real(hashed, password)

    monkeypatch.setattr(owners, "_verify", counting)
    return calls


@pytest.fixture
def second_process_db(io_loop: Any, settings: Any, db: Any) -> Iterator[Any]:
    """The same database through a second client, as another process would see it."""
    client, database = connect(settings)
    yield database
    io_loop.run_sync(client.close)


@pytest.mark.gen_test
async def test_login_succeeds_fails_and_throttles(db, boss):
    ok = await accounts.login(db, " BOSS ", PASSWORD, IP)
    assert ok.ok and ok.owner is not None and ok.owner["_id"] == NAME
    assert (ok.refused, ok.retry_at, ok.retry_after) == ("", None, 0)
    assert await db[owners.FAILURES].count_documents({}) == 0  # a success leaves nothing behind

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # MongoDB keeps milliseconds
    for _ in range(owners.MAX_FAILURES - 1):
        wrong = await accounts.login(db, NAME, "nope", IP, now=now)
        assert (wrong.ok, wrong.refused, wrong.retry_at) == (False, "invalid", None)
    last = await accounts.login(db, NAME, "nope", IP, now=now)
    assert last.refused == "throttled"
    assert last.retry_at == now + owners.WINDOW
    assert last.retry_after == int(owners.WINDOW.total_seconds())
    refused = await accounts.login(db, NAME, PASSWORD, IP, now=now + dt.timedelta(minutes=1))
    assert (refused.ok, refused.refused) == (False, "throttled")
    assert refused.retry_after == int((owners.WINDOW - dt.timedelta(minutes=1)).total_seconds())
    # Knocking while blocked does not extend the block: it lifts with the window.
    later = now + owners.WINDOW + dt.timedelta(seconds=1)
    assert (await accounts.login(db, NAME, PASSWORD, "203.0.113.9", now=later)).ok


@pytest.mark.gen_test
async def test_a_right_password_clears_the_account_failures(db, boss):
    for _ in range(owners.MAX_FAILURES - 1):
        await accounts.login(db, NAME, "nope", IP)
    assert (await accounts.login(db, NAME, PASSWORD, IP)).ok
    assert await db[owners.FAILURES].count_documents({"key": f"account:{NAME}"}) == 0
    assert (await accounts.login(db, NAME, "nope", "203.0.113.9")).refused == "invalid"


@pytest.mark.real_password_hash  # checks that overlap in time, at their real cost
@pytest.mark.gen_test(timeout=60)
async def test_a_burst_of_wrong_logins_verifies_at_most_the_limit(
    db, second_process_db, boss, verifications
):
    """40 concurrent wrong logins, from two "processes": at most MAX_FAILURES argon2 checks."""
    burst = [
        accounts.login(db if i % 2 else second_process_db, NAME, f"guess {i}", f"10.0.0.{i}")
        for i in range(40)
    ]
    results = await asyncio.gather(*burst)
    assert len(verifications) <= owners.MAX_FAILURES
    assert len(verifications) >= 1
    assert all(not r.ok for r in results)
    assert sum(r.refused == "throttled" for r in results) >= 40 - owners.MAX_FAILURES
    # Every password checked left its failure behind (the refused ones left nothing, so the
    # block does not slide). Up to the limit, the right password opens, unverified beyond it.
    key = f"account:{NAME}"
    assert await db[owners.FAILURES].count_documents({"key": key}) == len(verifications)
    for i in range(owners.MAX_FAILURES - len(verifications)):
        await accounts.login(db, NAME, f"top up {i}", f"10.0.3.{i}")
    before = len(verifications)
    assert before == owners.MAX_FAILURES
    late = await accounts.login(db, NAME, PASSWORD, "10.0.0.99")
    assert late.refused == "throttled" and late.retry_at is not None
    assert len(verifications) == before


@pytest.mark.real_password_hash  # checks that overlap in time, at their real cost
@pytest.mark.gen_test(timeout=60)
async def test_a_right_password_inside_a_burst_after_the_limit_is_refused(db, boss, verifications):
    wrong = [
        asyncio.ensure_future(accounts.login(db, NAME, f"guess {i}", f"10.0.1.{i}"))
        for i in range(39)
    ]
    # Let the burst take the limit's places (the wrong ones are still verifying), then the right
    # password arrives among the rest.
    key = f"account:{NAME}"
    for _ in range(500):
        if await db[owners.FAILURES].count_documents({"key": key}) >= owners.MAX_FAILURES:
            break
        await asyncio.sleep(0.002)
    right = asyncio.ensure_future(accounts.login(db, NAME, PASSWORD, "10.0.1.200"))
    more = [
        asyncio.ensure_future(accounts.login(db, NAME, f"again {i}", f"10.0.2.{i}"))
        for i in range(10)
    ]
    results = await asyncio.gather(*wrong, right, *more)
    assert not right.result().ok and right.result().refused == "throttled"
    assert all(not r.ok for r in results)
    assert len(verifications) <= owners.MAX_FAILURES
    assert PASSWORD not in verifications


@pytest.mark.gen_test
async def test_the_address_counter_covers_every_account(db, boss):
    for i in range(owners.MAX_FAILURES):
        await accounts.login(db, f"guess{i}", "nope", IP)
    assert (await accounts.login(db, NAME, PASSWORD, IP)).refused == "throttled"
    assert (await accounts.login(db, NAME, PASSWORD, "203.0.113.9")).ok


@pytest.mark.gen_test
async def test_an_empty_name_is_a_failure_without_a_verification(db, verifications):
    result = await accounts.login(db, "   ", "whatever", IP)
    assert result.refused == "invalid"
    assert verifications == []


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "current,new,repeat,reason",
    [
        ("wrong", "n3w password", "n3w password", "wrong_current"),
        (PASSWORD, "n3w password", "other one", "mismatch"),
        (PASSWORD, "short", "short", "too_short"),
        (PASSWORD, "x" * 1100, "x" * 1100, "too_long"),
        (PASSWORD, PASSWORD, PASSWORD, "same"),
    ],
)
async def test_change_password_refusals_say_why(db, boss, current, new, repeat, reason):
    with pytest.raises(accounts.PasswordRefused) as info:
        await accounts.change_password(db, NAME, current, new, repeat=repeat)
    assert info.value.reason == reason
    assert info.value.message  # English, for the person typing
    assert await owners.authenticate(db, NAME, PASSWORD) is not None  # nothing changed


@pytest.mark.gen_test
async def test_change_password_bumps_the_session_version(db, boss):
    changed = await accounts.change_password(db, NAME, PASSWORD, "n3w password")
    assert changed.session_version == boss["session_version"] + 1
    assert await owners.authenticate(db, NAME, "n3w password") is not None
    assert await owners.authenticate(db, NAME, PASSWORD) is None
    assert "1024" in accounts.PasswordRefused("too_long").message
