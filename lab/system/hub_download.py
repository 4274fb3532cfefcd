"""keras-hub presets (ResNet-18, ViT, DeiT) downloaded through the kit's one bounded ``fetch``.

keras-hub's ``from_preset`` asks kagglehub for each file of a preset (``config.json``,
``model.weights.h5``, ...). kagglehub's HTTP resolver asks Kaggle's API (through kagglesdk) for
the file, gets a redirect to a signed storage URL, follows it and copies the bytes. kagglesdk's
API requests have no timeout at all, and the copy is kagglehub's own (no retries; a resume only
when the server advertises ranges).

Within ``keras_hub_downloads_through_fetch()``, for a model file (what keras-hub asks for):

- each API request waits at most ``LAB_DOWNLOAD_TIMEOUT`` s and is retried ``LAB_DOWNLOAD_RETRIES``
  times when it gets no answer or a server error, then fails with the kit's ``DownloadError``;
  an API refusal (404: keras-hub probes optional files this way; 401/403) is left to kagglehub;
- the redirect is not followed by kagglesdk: the storage URL is fetched with ``lab.system.download.fetch``
  (retries, resume, progress, the md5 the bucket publishes in ``x-goog-hash``, a lock against a
  second process) into the very path of kagglehub's cache, so kagglehub marks it complete as usual
  and keras-hub finds it there next time.

Everything else kagglehub does (Colab's and Kaggle's own caches, whole-model downloads, datasets)
is unchanged, with API requests bounded all the same. The names patched are checked on entry:
a kagglehub that moved one fails loudly (``RuntimeError`` naming the versions) instead of
downloading silently without bounds.
"""

from __future__ import annotations

import base64
import contextlib
import email.message
import os
import threading
import urllib.parse
import zipfile
from pathlib import Path
from typing import Iterator

from lab.system.download import (AttemptFailed, ChecksumError, DatasetNotAvailableError, download_settings, fetch,
                          recorded_sha256, with_retries)

# The kagglehub release this was written against; the checks below say what changed after it.
WRITTEN_FOR = "kagglehub 1.0.2 (kagglesdk 0.1.28), keras-hub 0.32"
# What kagglehub's HTTP resolver module must hold for the routing to work.
_PATCHED = ("build_kaggle_client", "download_file", "Cache", "ModelHttpResolver")

_local = threading.local()  # the model file being resolved in this thread: its cache path and completion mark


class _Abort(Exception):
    """Carries the kit's error through keras-hub's and kagglehub's handlers unchanged.

    keras-hub reads a FileNotFoundError as "this optional preset file does not exist" and goes on
    without it; the kit's DownloadError is one, so it travels wrapped and is unwrapped on exit.
    """

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def keras_hub_downloads_through_fetch() -> Iterator[None]:
    """Within this block, kagglehub's model downloads (keras-hub presets) go through ``fetch``.

    Raises:
        DownloadError: an API request or the file transfer failed after its retries (URL, cause,
            where to place the file by hand).
        ChecksumError: the file's bytes differ from the md5 the storage published.
        RuntimeError: the installed kagglehub no longer has what is patched here.
    """
    try:
        from kagglehub import http_resolver
    except ImportError:  # keras-hub then says itself that kagglehub is missing
        yield
        return
    missing = [name for name in _PATCHED if not hasattr(http_resolver, name)]
    if missing or not hasattr(http_resolver.ModelHttpResolver, "_resolve"):
        import kagglehub

        raise RuntimeError(
            f"kagglehub {getattr(kagglehub, '__version__', '?')} no longer has kagglehub.http_resolver."
            f"{', '.join(missing) or 'ModelHttpResolver._resolve'}, through which the kit bounds keras-hub's "
            f"downloads (lab/system/hub_download.py, written for {WRITTEN_FOR}). Install that kagglehub version "
            "(`pip install kagglehub==1.0.2`) or adapt lab/system/hub_download.py.")
    originals = {name: getattr(http_resolver, name) for name in ("build_kaggle_client", "download_file")}
    original_resolve = http_resolver.ModelHttpResolver._resolve

    def resolve(self, handle, path=None, *, force_download=False, output_dir=None):
        # keras-hub asks for one file of a versioned handle: where kagglehub will put it is known.
        _local.target = _local.marker = None
        if path and handle.is_versioned():
            cache = http_resolver.Cache(override_dir=output_dir)
            _local.target = Path(cache.get_path(handle, path))
            marker = getattr(cache, "_get_completion_marker_filepath", None)  # only named in errors
            _local.marker = marker(handle, path) if marker else None
        try:
            return original_resolve(self, handle, path, force_download=force_download, output_dir=output_dir)
        finally:
            _local.target = _local.marker = None

    http_resolver.build_kaggle_client = lambda: _bounded_client(originals["build_kaggle_client"]())
    http_resolver.download_file = _download_through_fetch(originals["download_file"])
    http_resolver.ModelHttpResolver._resolve = resolve
    try:
        yield
    except _Abort as abort:
        raise abort.error from None
    finally:
        for name, function in originals.items():
            setattr(http_resolver, name, function)
        http_resolver.ModelHttpResolver._resolve = original_resolve


def _bounded_client(client):
    """kagglesdk's client, its requests bounded, retried and (for a model file) not redirected."""
    import requests

    http = client.http_client()
    http._init_session()
    session = getattr(http, "_session", None)
    if not isinstance(session, requests.Session):
        raise RuntimeError(f"kagglesdk's KaggleHttpClient no longer keeps a requests.Session in _session, whose "
                           f"requests the kit bounds (lab/system/hub_download.py, written for {WRITTEN_FOR}).")
    send = session.send

    def bounded_send(request, **settings):
        timeout, retries = download_settings()
        settings["timeout"] = (timeout, timeout)
        target = getattr(_local, "target", None)
        if settings.get("stream") and target is not None:
            settings["allow_redirects"] = False  # the file itself comes through fetch

        def attempt():
            try:
                response = send(request, **settings)
            except requests.RequestException as error:
                raise AttemptFailed(_requests_cause(error, timeout), retry=True) from None
            if response.status_code >= 500 or response.status_code in (408, 429):
                response.close()
                raise AttemptFailed(f"HTTP {response.status_code} {response.reason}", retry=True)
            if response.is_redirect and not settings.get("allow_redirects", True):
                # kagglesdk parses the body of any answer typed JSON; a redirect's answer is its
                # Location, so its body (empty, or a note) is not parsed.
                response.headers.pop("Content-Type", None)
            return response

        where = target or Path(_cache_folder())
        try:
            return with_retries(attempt, url=request.url, path=where, how_to=_how_to(where), timeout=timeout,
                                retries=retries)
        except DatasetNotAvailableError as error:
            raise _Abort(error) from None

    session.send = bounded_send
    return client


def _download_through_fetch(kagglehub_download_file):
    """kagglehub's ``download_file``, fetching the file a redirect points to with the kit's ``fetch``."""

    def download_file(response, out_file, resource_handle, cached_path=None, *, extract_auto_compressed_file=False):
        if not response.is_redirect:  # bytes sent by the API itself (not how Kaggle serves model files)
            return kagglehub_download_file(response, out_file, resource_handle, cached_path,
                                           extract_auto_compressed_file=extract_auto_compressed_file)
        url = urllib.parse.urljoin(response.url, response.headers["Location"])
        response.close()
        out = Path(out_file)
        if out.exists() and not recorded_sha256(out).exists():
            # kagglehub marks a file complete only after its copy; one without the mark and without
            # fetch's record is an unfinished copy by kagglehub itself: never trusted, fetched again.
            out.unlink()
        # kagglehub's rule: a file the storage serves zipped (<name>.zip) is unzipped to its name.
        zipped = extract_auto_compressed_file and Path(urllib.parse.urlsplit(url).path).name == out.name + ".zip"
        try:
            fetched = fetch(url, out.with_name(out.name + ".zip") if zipped else out,
                            published_checksum=storage_md5, cache_note=_cache_note())
        except (DatasetNotAvailableError, ChecksumError) as error:
            raise _Abort(error) from None
        if zipped:
            with zipfile.ZipFile(fetched) as archive:
                archive.extract(out.name, out.parent)
            fetched.unlink()
            recorded_sha256(fetched).unlink(missing_ok=True)
        return True

    return download_file


def storage_md5(headers: email.message.Message) -> dict[str, str]:
    """``{"md5": hex}`` from a storage bucket's ``x-goog-hash: crc32c=...,md5=<base64>`` header, else ``{}``."""
    for value in headers.get_all("x-goog-hash") or []:
        for item in value.split(","):
            name, _, digest = item.strip().partition("=")
            if name == "md5" and digest:
                try:
                    return {"md5": base64.b64decode(digest, validate=True).hex()}
                except ValueError:
                    return {}
    return {}


def _cache_folder() -> str:
    from kagglehub.config import get_cache_folder

    return get_cache_folder()


def _cache_note() -> str:
    marker = getattr(_local, "marker", None)
    mark = f"the empty file {marker}" if marker else "its empty <name>.complete file in the .complete folder"
    return (f"kagglehub uses it once {mark} marks it complete (kagglehub's own mark); or copy kagglehub's whole "
            f"cache ({_cache_folder()}) from a machine that has the preset; set KAGGLEHUB_CACHE to use another folder")


def _how_to(where: Path) -> str:
    return f"Download the preset's file yourself and put it at {where}; {_cache_note()}."


def _requests_cause(error: Exception, timeout: float) -> str:
    """A ``requests`` failure in words, as ``lab.system.download`` words urllib's."""
    import requests

    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.TooManyRedirects):
        return "a redirect loop (the server keeps redirecting)"
    text = str(error)
    if "Connection refused" in text:
        return "connection refused"
    if "NameResolutionError" in text or "Name or service not known" in text:
        return f"the host name could not be resolved, offline? ({text})"
    if isinstance(error, requests.ConnectionError):
        return f"the connection failed ({text})"
    return f"{type(error).__name__}: {text}"
