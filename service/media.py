"""The media library: permanent material on WeChat (what reply rules point at), checked before
upload against WeChat's limits so the owner gets a clear message instead of an errcode.

Temporary media (``media/upload``) expire after 3 days: a rule must never point at one, so the
library only adds permanent material (``material/add_material``). Limits (WeChat's 素材管理):

- image: at most 10 MB; bmp, png, jpeg, jpg, gif (the content must be that format);
- voice: at most 2 MB and 60 seconds; amr, mp3;
- video: at most 10 MB; mp4 (a title is required).

Durations are read with ``mutagen`` (mp3); AMR (which it does not read) by counting frames.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import PurePath
from typing import Any

import mutagen.mp3

__all__ = ["LIMITS", "MEDIA_KINDS", "MediaLimit", "check_upload"]

MB = 1024 * 1024
MAX_VOICE_SECONDS = 60
MAX_TITLE_CHARS = 64


@dataclasses.dataclass(frozen=True)
class MediaLimit:
    max_bytes: int
    formats: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes, "formats": list(self.formats)}


LIMITS = {
    "image": MediaLimit(10 * MB, ("bmp", "png", "jpeg", "jpg", "gif")),
    "voice": MediaLimit(2 * MB, ("amr", "mp3")),
    "video": MediaLimit(10 * MB, ("mp4",)),
}
MEDIA_KINDS = tuple(LIMITS)

# File signatures: what the content must start with for each format.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "bmp": (b"BM",),
    "amr": (b"#!AMR\n",),
}
# AMR-NB frame sizes in bytes (header included) by mode; each frame is 20 ms.
_AMR_FRAME = [13, 14, 16, 18, 20, 21, 27, 32, 6, 1, 1, 1, 1, 1, 1, 1]


def _amr_seconds(data: bytes) -> float | None:
    pos, frames = 6, 0
    while pos < len(data):
        mode = (data[pos] >> 3) & 0x0F
        pos += _AMR_FRAME[mode]
        frames += 1
    return frames * 0.02 if pos == len(data) else None


def _mp3_seconds(data: bytes) -> float | None:
    try:
        info = mutagen.mp3.MP3(io.BytesIO(data)).info
    except mutagen.MutagenError:
        return None
    return float(info.length) if info is not None else None


def check_upload(kind: str, filename: str, data: bytes, *, title: str = "") -> list[str]:
    """Every reason WeChat would refuse this upload (``[]``: send it)."""
    limit = LIMITS.get(kind)
    if limit is None:
        return [f"{kind!r} is not one of {', '.join(MEDIA_KINDS)}"]
    problems: list[str] = []
    ext = PurePath(filename).suffix.lower().lstrip(".")
    if ext not in limit.formats:
        found = ext or "no extension"
        problems.append(
            f"{filename!r}: a {kind} must be {', '.join(limit.formats)} (this is {found})"
        )
    if not data:
        problems.append(f"{filename!r} is empty")
    elif len(data) > limit.max_bytes:
        problems.append(
            f"{filename!r} is {len(data) / MB:.1f} MB; WeChat takes a {kind} of at most "
            f"{limit.max_bytes // MB} MB"
        )
    if problems:
        return problems
    magic = _MAGIC.get(ext)
    if magic is not None and not data.startswith(magic):
        problems.append(f"{filename!r} is not really a {ext} file")
    elif ext == "mp4" and data[4:8] != b"ftyp":
        problems.append(f"{filename!r} is not really an mp4 file")
    if kind == "voice" and not problems:
        seconds = _amr_seconds(data) if ext == "amr" else _mp3_seconds(data)
        if seconds is None:
            problems.append(f"{filename!r}: cannot read its length; is it a valid {ext}?")
        elif seconds > MAX_VOICE_SECONDS:
            problems.append(
                f"{filename!r} lasts {seconds:.0f} s; WeChat takes a voice of at most "
                f"{MAX_VOICE_SECONDS} s"
            )
    if kind == "video":
        if not title.strip():
            problems.append("a video needs a title")
        elif len(title) > MAX_TITLE_CHARS:
            problems.append(f"the title is over {MAX_TITLE_CHARS} characters")
    return problems
