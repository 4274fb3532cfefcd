"""Downloads with a checksum, a cache and a clear error when the network is unreachable."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path

from lab.atomic import atomic_path
from lab.progress import progress

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's checksum does not match the one the registry expects."""


class DatasetNotAvailableError(FileNotFoundError):
    """A dataset file is not in the cache and cannot be downloaded (offline, or refused)."""


def file_hash(path: str | os.PathLike, algorithm: str = "md5", chunk_size: int = 1 << 20) -> str:
    """Returns the hex digest of a file, read in chunks so large files use little memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None) -> None:
    """Raises ChecksumError if ``path`` does not have the expected digest.

    Args:
        path: the file to check.
        md5: expected MD5 hex digest, or None.
        sha256: expected SHA-256 hex digest, or None.
    """
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = file_hash(path, algorithm)
        if actual != expected.lower():
            raise ChecksumError(
                f"Checksum mismatch for {path}: expected {algorithm} {expected}, got {actual}. "
                "The file is corrupt or incomplete: delete it and run again to download it anew, "
                "or put a good copy at that path."
            )


def fetch(
    url: str,
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    download: bool = True,
    timeout: float = 60.0,
    progress_bar: bool = True,
) -> Path:
    """Returns ``path``, downloading ``url`` to it first if it is not already cached.

    A cached file is checked against its checksum before it is trusted. A download goes to a
    temporary file that is verified and only then renamed to ``path``, so an interrupted or
    corrupt download never leaves a file that a later run would use.

    Args:
        url: where the file is published.
        path: where the file is cached (under the data directory).
        md5: expected MD5 hex digest (checked when given).
        sha256: expected SHA-256 hex digest (checked when given).
        download: if False, a missing file is an error instead of a download.
        timeout: seconds to wait for the server.
        progress_bar: show the bytes received (``lab.progress``: in a terminal or a notebook
            with widgets, never in logs or in the outputs nbval checks).

    Returns:
        The path of the verified file.

    Raises:
        DatasetNotAvailableError: the file is missing and could not be downloaded.
        ChecksumError: the cached or downloaded file does not match its checksum.
    """
    path = Path(path)
    if path.exists():
        verify(path, md5=md5, sha256=sha256)
        return path
    how_to = (
        f"Download {url} yourself and put it at {path}"
        + (f" (md5 {md5})" if md5 else "")
        + (f" (sha256 {sha256})" if sha256 else "")
        + "; set LAB_DATA_DIR to use another data directory."
    )
    if not download:
        raise DatasetNotAvailableError(f"{path.name} is not in the cache ({path}). {how_to}")
    try:
        with atomic_path(path) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                _copy(response, out, desc=path.name, enabled=progress_bar)
            verify(tmp, md5=md5, sha256=sha256)
    # URLError, timeouts and refused connections are all OSErrors; a connection cut mid-body
    # raises http.client.IncompleteRead, which is not one.
    except (OSError, http.client.HTTPException) as error:
        raise DatasetNotAvailableError(
            f"Could not download {path.name} from {url} ({error}). If this machine is offline: {how_to}"
        ) from error
    return path


def _copy(response, out, *, desc: str, enabled: bool) -> int:
    """Copies a response to a file in chunks, counting the bytes on a bar; returns the bytes copied.

    The bar's total is the server's Content-Length where it sends one (otherwise the bar shows the
    bytes and the rate, without a percentage).
    """
    length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
    total = int(length) if length and length.isdigit() else None
    copied = 0
    with progress(total=total, desc=desc, unit="B", unit_scale=True, enabled=enabled) as bar:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            out.write(chunk)
            bar.update(len(chunk))
            copied += len(chunk)
    if total is not None and copied != total:
        # A connection closed early: say so plainly rather than leave it to the checksum (or to no
        # check at all, for a file registered without one). An OSError, so fetch reports it as such.
        raise OSError(f"the server announced {total} bytes but sent {copied}")
    return copied
