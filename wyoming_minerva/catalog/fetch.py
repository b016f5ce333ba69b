"""HTTP for the catalog: indexes read with a size cap, and files downloaded with resume and checks.

A download streams into `<name>.part`; when the connection is cut it asks again with `Range: bytes=N-` (up to
`retries` times), so only the missing bytes travel again. The md5/sha256 of the catalog is computed as the bytes
arrive (a resumed part is hashed from disk first) and checked with the size at the end. Disk writes and hashing
run on a writer thread a few chunks behind the network, so neither waits for the other nor blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import httpx

from .entries import RemoteFile
from .errors import DownloadError, HashMismatchError, IntegrityError, RemoteStatusError, SourceUnreachableError

_LOGGER = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
WRITES_AHEAD = 4  # chunks handed to the writer thread and not yet written (memory: 4 MiB per download)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(\d+|\*)$")

ProgressCallback = Callable[[int, int], None]  # (bytes of this file on disk, bytes newly fetched)


def reason(err: BaseException) -> str:
    """A short human reason for a network failure (`connection refused`, `timed out`), from the deepest cause
    that says one (httpx wraps the OS error in two layers of `all connection attempts failed`)."""
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return (str(err) or type(err).__name__).lower()


async def fetch_json(client: httpx.AsyncClient, url: str, max_bytes: int) -> Any:
    """An index as JSON; SourceUnreachableError (naming the URL and why) for anything else."""
    body = bytearray()
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise SourceUnreachableError(f"cannot fetch {url}: HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise SourceUnreachableError(f"{url} is larger than {max_bytes} bytes")
    except httpx.HTTPError as err:
        raise SourceUnreachableError(f"cannot fetch {url}: {reason(err)}") from err
    try:
        return json.loads(body)
    except ValueError as err:
        raise SourceUnreachableError(f"{url} is not JSON: {err}") from err


class PartFile:
    """`<name>.part` and the digests of what it holds. Blocking methods: call them on a thread."""

    def __init__(self, path: Path, remote: RemoteFile) -> None:
        self.path = path
        self.remote = remote
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False) if remote.md5 else None
        self._sha256 = hashlib.sha256() if remote.sha256 else None
        self._file: IO[bytes] | None = None

    def open(self) -> int:
        """Open for appending, hashing what an earlier attempt left; returns its size."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a+b")
        self._file.seek(0)
        while block := self._file.read(CHUNK_BYTES):
            self._update(block)
        return self.size

    def restart(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False) if self.remote.md5 else None
        self._sha256 = hashlib.sha256() if self.remote.sha256 else None

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self._update(chunk)

    def _update(self, block: bytes) -> None:
        self.size += len(block)
        for digest in (self._md5, self._sha256):
            if digest is not None:
                digest.update(block)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def verify(self) -> None:
        """IntegrityError / HashMismatchError when the bytes are not the catalog's."""
        remote = self.remote
        if remote.size is not None and self.size != remote.size:
            raise IntegrityError(f"{remote.name}: {self.size} bytes, the catalog says {remote.size}")
        for digest, expected, label in ((self._md5, remote.md5, "md5"), (self._sha256, remote.sha256, "sha256")):
            if digest is not None and digest.hexdigest() != expected:
                raise HashMismatchError(f"{remote.name}: {label} {digest.hexdigest()}, the catalog says {expected}")


async def download(
    client: httpx.AsyncClient,
    remote: RemoteFile,
    part_path: Path,
    progress: ProgressCallback,
    retries: int,
    max_bytes: int,
) -> PartFile:
    """Fetch `remote` into `part_path`, resuming what is there; the caller checks it with PartFile.verify.
    Errors: DownloadError (the part stays for a later resume), RemoteStatusError, IntegrityError (too long)."""
    part = PartFile(part_path, remote)
    await asyncio.to_thread(part.open)
    progress(part.size, 0)
    attempts = 0
    reached = False  # a server answered once: later connection failures are cuts, worth retrying
    try:
        while True:
            try:
                await _transfer(client, remote, part, progress, max_bytes)
                reached = True
                if remote.size is None or part.size >= remote.size:
                    break
                raise httpx.RemoteProtocolError("the response ended early")
            except httpx.TransportError as err:
                first_contact = not reached and isinstance(err, httpx.ConnectError | httpx.ConnectTimeout)
                reached = reached or not first_contact
                attempts += 1
                if first_contact or attempts > retries:
                    where = httpx.URL(remote.url).host
                    raise DownloadError(f"cannot download {remote.name} from {where}: {reason(err)}") from err
                _LOGGER.info("Download of %s cut at %d bytes (%s); resuming", remote.name, part.size, reason(err))
                await asyncio.sleep(min(0.1 * 2**attempts, 3.0))
    finally:
        await asyncio.to_thread(part.close)
    return part


async def _transfer(
    client: httpx.AsyncClient, remote: RemoteFile, part: PartFile, progress: ProgressCallback, max_bytes: int
) -> None:
    if remote.size is not None and part.size > remote.size:
        await asyncio.to_thread(part.restart)
    if remote.size is not None and part.size == remote.size:
        return
    headers = {"Accept-Encoding": "identity"}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
    loop = asyncio.get_running_loop()
    async with client.stream("GET", remote.url, headers=headers) as response:
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != part.size:
                await asyncio.to_thread(part.restart)
                raise httpx.RemoteProtocolError("the server answered another range")
        elif response.status_code == 200:
            if part.size:
                await asyncio.to_thread(part.restart)  # the server ignores Range: from the start
        elif response.status_code == 416 and part.size and remote.size is None:
            return  # the part is the whole file
        else:
            raise RemoteStatusError(f"cannot download {remote.name}: HTTP {response.status_code} from {remote.url}")
        encoded = response.headers.get("content-encoding", "identity") not in ("", "identity")
        chunks = response.aiter_bytes(CHUNK_BYTES) if encoded else response.aiter_raw(CHUNK_BYTES)
        written = part.size
        # One writer thread per file keeps the chunks in order; a few may wait for it, so a thread scheduled
        # late on a busy machine does not stall the network side.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-write")
        pending: deque[asyncio.Future[None]] = deque()
        try:
            async for chunk in chunks:
                written += len(chunk)
                if written > (remote.size if remote.size is not None else max_bytes):
                    raise IntegrityError(f"{remote.name} is larger than {remote.size or max_bytes} bytes")
                pending.append(loop.run_in_executor(writer, part.write, chunk))
                if len(pending) > WRITES_AHEAD:
                    await pending.popleft()
                progress(written, len(chunk))
            while pending:
                await pending.popleft()
        finally:
            if pending:  # an error or a cancel: the writes end before the file closes
                await asyncio.wait(pending)
            writer.shutdown(wait=False)
