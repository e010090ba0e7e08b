"""The image reply: the media_id the bot answers an image with, kept in step with
``python -m service media upload`` (which stores it in MongoDB for every process).
"""

from __future__ import annotations

import asyncio
import logging
import time

from pymongo.errors import PyMongoError

from .store import Db, tokens

__all__ = ["ImageReply"]

log = logging.getLogger(__name__)


class ImageReply:
    """The media_id to answer an image with, in step with the image stored by ``media upload``.

    The stored media_id (MongoDB setting ``image_media_id``) wins over ``default``
    (``WECHAT_IMAGE_MEDIA_ID``). It is read once, on the first image message (waiting at most
    ``first_wait`` seconds), and then again in the background when the copy is older than
    ``interval`` seconds, so an upload from the command line reaches every process within a minute
    without a database round trip per message. Implements ``service.bot.ImageSource``.
    """

    def __init__(
        self,
        db: Db,
        default: str = "",
        *,
        interval: float = 60.0,
        first_wait: float = 1.0,
    ) -> None:
        self.db = db
        self.default = default
        self.interval = interval
        self.first_wait = first_wait
        self.media_id = default  # what an image message is answered with ("" = a text instead)
        self.loaded_at: float | None = None
        self._applied: str | None = None  # the stored value last applied to media_id
        self._task: asyncio.Task[None] | None = None

    async def current(self) -> str:
        """The media_id for an image reply: cheap unless the copy is stale.

        A stale copy is refreshed in the background (this message does not wait); only the very
        first call waits, at most ``first_wait`` seconds, for the stored value.
        """
        if self._task is None or self._task.done():
            if self.loaded_at is not None and time.monotonic() - self.loaded_at < self.interval:
                return self.media_id
            self._task = asyncio.create_task(self._refresh_quietly())
        if self.loaded_at is None:  # the very first image: wait briefly for the stored value
            await asyncio.wait({self._task}, timeout=self.first_wait)
        return self.media_id

    async def refresh(self) -> str:
        """Read the stored media_id now and apply it if it changed; returns the media_id in use.

        Without a stored value the current one stays (``WECHAT_IMAGE_MEDIA_ID``); a stored value
        that disappears gives way to that default again.
        """
        try:
            stored = await tokens.image_media_id(self.db)
        except PyMongoError as e:
            log.warning("could not read the stored image media_id (%s); keeping the current one", e)
            return self.media_id
        finally:
            self.loaded_at = time.monotonic()
        if stored != self._applied:
            self.media_id = stored or self.default
            self._applied = stored
            log.info("image reply: %s", "the uploaded image" if stored else "WECHAT_IMAGE_MEDIA_ID")
        return self.media_id

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a background task: log, never crash
            log.exception("refreshing the image media_id failed")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
