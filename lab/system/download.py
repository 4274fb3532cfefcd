"""Every download the kit starts: bounded waits, retries, resume, checksums and a clear error.

``fetch`` is the one way a file comes from the network: registry datasets, the Model Garden
checkpoint, (through ``keras_downloads_through_fetch``) the ImageNet weights Keras would
otherwise download itself with no timeout, and (through ``lab.system.hub_download``) keras-hub's
presets. Each attempt waits at most ``LAB_DOWNLOAD_TIMEOUT`` seconds for a connection and for
each read; a failed attempt is retried ``LAB_DOWNLOAD_RETRIES``
times with a doubling pause, resuming the bytes already received (kept in ``<file>.part``, an
HTTP Range request); the finished file is checked against its published checksum, or where none
is published against the sha256 recorded beside it (``<file>.sha256``) at its first download,
and only then renamed to its name. A failure names the URL, the cause in words and the path where
a copy may be placed by hand. Two processes fetching one file take turns (``<file>.lock``, POSIX
``flock``): the second waits, then reuses the file the first finished instead of writing into the
same ``.part``.

Proxies come from the usual ``http_proxy``/``https_proxy``/``no_proxy`` variables, read at each
download, and obey the same bounds (a proxy that accepts the connection and never answers is
"no answer within N s").
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from lab.system.atomic import exclusive, write_text
from lab.system.progress import progress

T = TypeVar("T")

_CHUNK = 1 << 20

# Settings (environment variables, read at each download so a notebook can change them).
TIMEOUT_ENV, DEFAULT_TIMEOUT = "LAB_DOWNLOAD_TIMEOUT", 30.0  # seconds to connect, and between reads
RETRIES_ENV, DEFAULT_RETRIES = "LAB_DOWNLOAD_RETRIES", 3  # attempts after the first
# The first pause between attempts; each later one doubles it (1, 2, 4 s by default).
BACKOFF_SECONDS = 1.0


class ChecksumError(ValueError):
    """A file's checksum does not match the one the registry expects."""


class DatasetNotAvailableError(FileNotFoundError):
    """A dataset file is not in the cache and cannot be downloaded (offline, or refused)."""


class DownloadError(DatasetNotAvailableError):
    """A download failed after its retries.

    Attributes:
        url: what was asked for.
        path: where the file belongs (where a copy may be placed by hand).
        cause: the last attempt's failure in words ("no answer within 30 s", "HTTP 404 Not Found").
    """

    def __init__(self, message: str, *, url: str, path: Path, cause: str):
        super().__init__(message)
        self.url, self.path, self.cause = url, path, cause


class AttemptFailed(Exception):
    """One attempt's failure: its cause in words, and whether another attempt may succeed."""

    def __init__(self, cause: str, *, retry: bool):
        super().__init__(cause)
        self.cause, self.retry = cause, retry


def download_settings() -> tuple[float, int]:
    """The timeout (seconds) and the retry count, from the environment or their defaults.

    Raises:
        ValueError: a setting that is not a positive number (timeout) or a count >= 0 (retries).
    """
    raw_timeout, raw_retries = os.environ.get(TIMEOUT_ENV), os.environ.get(RETRIES_ENV)
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT
        retries = int(raw_retries) if raw_retries else DEFAULT_RETRIES
    except ValueError:
        timeout = retries = -1
    if not timeout > 0 or retries < 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds and {RETRIES_ENV} a whole number >= 0; "
                         f"received {TIMEOUT_ENV}={raw_timeout!r}, {RETRIES_ENV}={raw_retries!r}. Unset them for "
                         f"the defaults ({DEFAULT_TIMEOUT:g} s, {DEFAULT_RETRIES} retries).")
    return timeout, retries


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
    mismatch = _mismatch(path, md5=md5, sha256=sha256)
    if mismatch:
        raise ChecksumError(
            f"Checksum mismatch for {path}: {mismatch}. "
            "The file is corrupt or incomplete: delete it and run again to download it anew, "
            "or put a good copy at that path."
        )


def _mismatch(path: str | os.PathLike, *, md5: str | None, sha256: str | None) -> str | None:
    """"expected md5 X, got Y" for the first digest that differs; None if all match."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = file_hash(path, algorithm)
        if actual != expected.lower():
            return f"expected {algorithm} {expected}, got {actual}"
    return None


def recorded_sha256(path: str | os.PathLike) -> Path:
    """Where the sha256 of a file published without a checksum is recorded (``<file>.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def fetch(
    url: str,
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    download: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
    progress_bar: bool = True,
    cache_note: str = "set LAB_DATA_DIR to use another data directory",
    published_checksum: Callable[[email.message.Message], dict[str, str]] | None = None,
) -> Path:
    """Returns ``path``, downloading ``url`` to it first if it is not already cached.

    A cached file is checked before it is trusted: against ``md5``/``sha256``, or, for a file
    published without a checksum, against the sha256 recorded beside it (recorded now if a copy
    was placed by hand). A download goes to ``<path>.part``, resumed by later attempts and later
    calls, and is renamed to ``path`` only once complete and verified. While it runs, the process
    holds ``<path>.lock``: another process fetching the same file waits, then reuses it.

    Args:
        url: where the file is published.
        path: where the file is cached (under the data directory).
        md5: expected MD5 hex digest (checked when given).
        sha256: expected SHA-256 hex digest (checked when given).
        download: if False, a missing file is an error instead of a download.
        timeout: seconds to wait for a connection and for each read (default: ``download_settings``).
        retries: attempts after the first (default: ``download_settings``).
        progress_bar: show the bytes received (``lab.system.progress``: in a terminal or a notebook
            with widgets, never in logs or in the outputs nbval checks).
        cache_note: what the error adds about the cache folder (a file in Keras' cache is not
            under the data directory).
        published_checksum: for a server that sends the file's checksum with it (a storage
            bucket's ``x-goog-hash``), reads ``{"md5": hex}`` or ``{"sha256": hex}`` from the
            response headers; the download is checked against it when ``md5``/``sha256`` are None.

    Returns:
        The path of the verified file.

    Raises:
        DownloadError: the download failed (no answer, refused, cut short, an HTTP error, a
            redirect loop); names the URL, the cause and where to place the file by hand.
        DatasetNotAvailableError: the file is missing and ``download`` is False.
        ChecksumError: the cached or downloaded file does not match its checksum.
        ValueError: a bad ``LAB_DOWNLOAD_*`` setting.
    """
    path = Path(path)
    if path.exists():
        _check_cached(path, md5=md5, sha256=sha256)
        return path
    how_to = (
        f"Download {url} yourself and put it at {path}"
        + (f" (md5 {md5})" if md5 else "")
        + (f" (sha256 {sha256})" if sha256 else "")
        + f"; {cache_note}."
    )
    if not download:
        raise DatasetNotAvailableError(f"{path.name} is not in the cache ({path}). {how_to}")
    default_timeout, default_retries = download_settings()
    timeout = default_timeout if timeout is None else timeout
    retries = default_retries if retries is None else retries
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path, on_wait=lambda: print(f"Waiting for another process that is downloading {path} ...",
                                               file=sys.stderr, flush=True)):
        if path.exists():  # the other process finished it while this one waited
            _check_cached(path, md5=md5, sha256=sha256)
            return path
        part = path.with_name(path.name + ".part")
        headers = with_retries(
            lambda: _attempt(url, part, timeout=timeout, desc=path.name, progress_bar=progress_bar),
            url=url, path=path, how_to=how_to, timeout=timeout, retries=retries, part=part)
        expected = {"md5": md5, "sha256": sha256}
        if md5 is None and sha256 is None and published_checksum is not None:
            expected.update(published_checksum(headers))
        mismatch = _mismatch(part, **expected)
        if mismatch:
            part.unlink()  # other bytes than the published ones: never resume from them
            raise ChecksumError(f"Wrong checksum for {path.name} downloaded from {url}: {mismatch}. The server or a "
                                f"proxy sent other bytes than the published file; nothing was kept. {how_to}")
        if md5 is None and sha256 is None:
            _record(part, recorded_sha256(path), path.name)
        os.replace(part, path)
    return path


def with_retries(attempt: Callable[[], T], *, url: str, path: Path, how_to: str, timeout: float, retries: int,
                 part: Path | None = None) -> T:
    """Returns what ``attempt`` returns, calling it again after a doubling pause while it fails.

    Args:
        attempt: one try; raises ``AttemptFailed`` (whose ``retry`` says if another may succeed).
        url: what is asked for, for the error.
        path: where the file belongs, for the error.
        how_to: how to place the file by hand, for the error.
        timeout: the wait in force, for the error.
        retries: attempts after the first.
        part: where the bytes received so far are kept, if anywhere.

    Raises:
        DownloadError: the last attempt's failure, or the first one no retry can mend.
    """
    number = 0
    while True:
        try:
            return attempt()
        except AttemptFailed as failure:
            if not failure.retry or number >= retries:
                tries = f"{number + 1} attempt{'s' if number else ''}"
                kept = f" The {part.stat().st_size} bytes received are kept in {part} and resumed next time." \
                    if part is not None and part.exists() else ""
                raise DownloadError(
                    f"Could not download {path.name} from {url}: {failure.cause} ({tries}{_via_proxy(url)}).{kept} "
                    f"If this machine is offline or behind a proxy that blocks it: {how_to} "
                    f"Waits and retries: {TIMEOUT_ENV} (now {timeout:g} s), {RETRIES_ENV} (now {retries}).",
                    url=url, path=path, cause=failure.cause) from None
            time.sleep(BACKOFF_SECONDS * 2 ** number)
            number += 1


def _check_cached(path: Path, *, md5: str | None, sha256: str | None) -> None:
    if md5 is not None or sha256 is not None:
        verify(path, md5=md5, sha256=sha256)
        return
    record = recorded_sha256(path)
    if record.exists():
        verify(path, sha256=record.read_text(encoding="utf-8").split()[0])
    else:  # a copy placed by hand: trusted once, then checked on every reuse
        _record(path, record, path.name)


def _record(source: Path, record: Path, name: str) -> None:
    write_text(record, f"{file_hash(source, 'sha256')}  {name}\n")


def _via_proxy(url: str) -> str:
    scheme, host = urllib.parse.urlsplit(url)[:2]
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host.split(":")[0]):
        return ""
    return f", through the proxy {proxy} set by {scheme}_proxy"


def _attempt(url: str, part: Path, *, timeout: float, desc: str, progress_bar: bool) -> email.message.Message:
    """Downloads ``url`` into ``part``, resuming it; returns the response's headers; raises AttemptFailed."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        # A fresh opener reads the proxy variables now (urlopen's is built once per process).
        response = urllib.request.build_opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if 300 <= error.code < 400:
            raise AttemptFailed(f"a redirect loop (HTTP {error.code}: the server keeps redirecting)",
                                retry=False) from None
        if error.code == 416 and have:  # the range asked for does not exist: start again from zero
            part.unlink()
            raise AttemptFailed(f"wrong size (the server has no bytes after the {have} already received)", retry=True) \
                from None
        # A server error or "too many requests" may pass; 404 and other refusals will not.
        raise AttemptFailed(f"HTTP {error.code} {error.reason}", retry=error.code >= 500 or error.code in (408, 429)) \
            from None
    except (OSError, http.client.HTTPException) as error:
        raise AttemptFailed(_cause(error, timeout), retry=True) from None
    with response:
        status = getattr(response, "status", None) or 200
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        start = _resume_start(response.headers.get("Content-Range")) if status == 206 else 0
        if start != have:
            if status == 206:  # another range than asked: start again from zero
                part.unlink()
                raise AttemptFailed(f"wrong size (the server resumed at another byte than the {have} asked)",
                                    retry=True)
            have = 0  # the server ignored the range and sends the whole file: start the part again
        total = None if length is None else have + length
        received = have
        try:
            with open(part, "ab" if have else "wb") as out, \
                    progress(total=total, initial=have, desc=desc, unit="B", unit_scale=True,
                             enabled=progress_bar) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
        except (OSError, http.client.HTTPException) as error:
            of = f" of {total}" if total is not None else ""
            raise AttemptFailed(f"cut short after {received}{of} bytes ({_cause(error, timeout)})",
                                retry=True) from None
    if total is not None and received < total:
        raise AttemptFailed(f"cut short after {received} of {total} bytes (the connection closed early)", retry=True)
    return response.headers


def _resume_start(content_range: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes 100-199/200`` header, None if unreadable."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _cause(error: BaseException, timeout: float) -> str:
    """A network error in words."""
    reason = getattr(error, "reason", error)  # URLError wraps the socket's error
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"the host name could not be resolved, offline? ({reason})"
    if isinstance(reason, (ConnectionResetError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
        return "the connection was closed by the other side"
    return f"{type(reason).__name__}: {reason}"


# -- Keras' own downloads --------------------------------------------------------------------------


@contextlib.contextmanager
def keras_downloads_through_fetch() -> Iterator[None]:
    """Within this block, Keras' ``get_file`` (the ImageNet weights of keras.applications) uses ``fetch``.

    Keras' own download waits forever on a network that accepts connections and never answers.
    Here the file Keras asks for (same URL, same file name, same place in its cache,
    ``$KERAS_HOME/models`` or ``~/.keras/models``, same published hash) is fetched with the kit's
    bounds and errors, so Keras finds it in its cache. Archives to extract are left to Keras.
    """
    from keras.src.backend import config
    from keras.src.utils import file_utils

    keras_get_file = file_utils.get_file

    def get_file(fname=None, origin=None, untar=False, md5_hash=None, file_hash=None, cache_subdir="datasets",
                 hash_algorithm="auto", extract=False, archive_format="auto", cache_dir=None, force_download=False):
        if untar or extract or force_download or origin is None:
            return keras_get_file(fname, origin, untar=untar, md5_hash=md5_hash, file_hash=file_hash,
                                  cache_subdir=cache_subdir, hash_algorithm=hash_algorithm, extract=extract,
                                  archive_format=archive_format, cache_dir=cache_dir, force_download=force_download)
        # Where Keras' get_file puts it (keras/src/utils/file_utils.py), so Keras itself finds it later.
        base = os.path.expanduser(cache_dir or config.keras_home())
        if not os.access(base, os.W_OK):
            base = os.path.join("/tmp", ".keras")
        name = fname or os.path.basename(urllib.parse.urlsplit(origin).path)
        expected = file_hash or md5_hash
        if md5_hash is not None and file_hash is None:
            hash_algorithm = "md5"
        algorithm = hash_algorithm if hash_algorithm != "auto" else \
            ("sha256" if expected and len(expected) == 64 else "md5")
        checksum = {algorithm: expected} if expected else {}
        return str(fetch(origin, Path(base) / cache_subdir / name, **checksum,
                         cache_note="Keras looks for it there (set KERAS_HOME to use another folder)"))

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = keras_get_file

