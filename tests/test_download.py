import hashlib
import time
from pathlib import Path
from unittest import mock

import pytest
from download_servers import CONTENT, FAULTS, OTHER

from lab.system.download import (ChecksumError, DatasetNotAvailableError, DownloadError, download_settings, fetch,
                          recorded_sha256, verify)


def _source(tmp_path, content=b"hello dataset"):
    path = tmp_path / "source.bin"
    path.write_bytes(content)
    return path, hashlib.md5(content).hexdigest(), hashlib.sha256(content).hexdigest()


def test_fetch_downloads_verifies_and_caches(tmp_path):
    source, md5, sha = _source(tmp_path)
    target = tmp_path / "cache" / "file.bin"
    assert fetch(source.as_uri(), target, md5=md5, sha256=sha) == target
    assert target.read_bytes() == b"hello dataset"
    source.unlink()  # a second call must not need the network
    assert fetch(source.as_uri(), target, md5=md5) == target


def test_checksum_mismatch_leaves_no_file(tmp_path):
    source, _, _ = _source(tmp_path)
    target = tmp_path / "cache" / "file.bin"
    with pytest.raises(ChecksumError, match="expected md5 0+, got"):
        fetch(source.as_uri(), target, md5="0" * 32)
    assert not target.exists()
    assert not list(target.parent.glob(".tmp-*")), "a failed download left a temporary file"


def test_corrupt_cached_file_is_refused_with_advice(tmp_path):
    target = tmp_path / "cached.bin"
    target.write_bytes(b"truncated")
    with pytest.raises(ChecksumError, match="delete it and run again"):
        verify(target, sha256="ab" * 32)


def test_offline_error_names_file_path_and_url(tmp_path, quick_downloads):
    target = tmp_path / "cache" / "bloodmnist.npz"
    url = "http://127.0.0.1:9/bloodmnist.npz"  # nothing listens on the discard port
    with pytest.raises(DatasetNotAvailableError, match="connection refused") as error:
        fetch(url, target, md5="a" * 32)
    message = str(error.value)
    assert url in message and str(target) in message and "a" * 32 in message
    assert not target.exists()


def test_download_disabled_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotAvailableError, match="not in the cache"):
        fetch("http://example.invalid/x.npz", tmp_path / "x.npz", download=False)


# -- every download path meets every fault (loopback servers only: tests/download_servers.py) ----------


def _registry(base, tmp_path, monkeypatch, server):
    """A registry dataset file: fetched with its published md5 into the data folder."""
    target = tmp_path / "data" / "keras" / "file.bin"
    return lambda: fetch(f"{base}/file.bin", target, md5=hashlib.md5(CONTENT).hexdigest()), target


def _keras_weights(base, tmp_path, monkeypatch, server):
    """keras.applications' weights: Keras' get_file (as the applications call it), routed to fetch."""
    from keras.src.utils import file_utils

    from lab.system.download import keras_downloads_through_fetch

    target = tmp_path / "keras_home" / "models" / "file_notop.h5"

    def download():
        with keras_downloads_through_fetch():
            return Path(file_utils.get_file("file_notop.h5", f"{base}/file_notop.h5", cache_subdir="models",
                                            file_hash=hashlib.sha256(CONTENT).hexdigest()))
    return download, target


def _checkpoint(base, tmp_path, monkeypatch, server):
    """Model Garden's ImageNet checkpoint (no published checksum): its .index and .data files."""
    import lab.tasks.instance.model as garden

    monkeypatch.setattr(garden, "CHECKPOINT_BUCKET", base)
    prefix = tmp_path / "data" / "weights" / "model-garden" / garden.IMAGENET_CHECKPOINTS["resnet50"]
    return lambda: garden.imagenet_checkpoint("resnet50")[0].with_suffix(".index"), prefix.with_suffix(".index")


def _point_kagglehub_at(endpoint, tmp_path, monkeypatch):
    """kagglehub's cache under the test's folder, and Kaggle's API at ``endpoint`` (a loopback server)."""
    pytest.importorskip("keras_hub")
    from kagglesdk import kaggle_env

    for name in ("KAGGLE_API_ENVIRONMENT", "KAGGLE_KERNEL_RUN_TYPE", "TBE_RUNTIME_ADDR"):  # Kaggle's, Colab's
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.PROD, endpoint)
    # kagglehub names the calling library in its user agent by inspecting the stack, whose first
    # call maps every loaded module to its file (about 2 s with TensorFlow loaded): done here, before
    # a test times the download.
    from kagglehub.clients import get_user_agent

    get_user_agent()
    return tmp_path / "kagglehub" / "models" / "keras" / "resnetv1" / "keras" / "resnet_18_imagenet" / "3"


def _preset_file(name="file.bin"):
    """A file of the resnet_18_imagenet preset, asked for as keras-hub's from_preset asks for each."""
    from keras_hub.src.utils import preset_utils

    from lab.system.hub_download import keras_hub_downloads_through_fetch

    with keras_hub_downloads_through_fetch():
        return Path(preset_utils.get_file("kaggle://keras/resnetv1/keras/resnet_18_imagenet/3", name))


def _keras_hub_preset(base, tmp_path, monkeypatch, server):
    """keras-hub's preset file: kagglehub asks Kaggle's API (here, a redirect to ``base``), then fetch."""
    api = f"{base}/kaggle-api" if base.startswith(server.base) else f"{server.base}/kaggle-api"  # silent: the file
    folder = _point_kagglehub_at(api, tmp_path, monkeypatch)
    server.redirect_to = base
    return _preset_file, folder / "file.bin"


PATHS = {"registry": _registry, "keras-weights": _keras_weights, "checkpoint": _checkpoint,
         "keras-hub-preset": _keras_hub_preset}
# fault -> (the phrase of the error, or None where the download must succeed)
EXPECTED = {
    "silent": r"no answer within 0\.3 s \(2 attempts\)",
    "slow": None,
    "short": rf"cut short after {len(CONTENT) // 2} of {len(CONTENT)} bytes \(the connection closed early\) "
             r"\(2 attempts\)",
    "other": r"Wrong checksum for file\S* downloaded from .*/other/.*: expected",
    "404": r"HTTP 404 Not Found \(1 attempt\)",
    "500": r"HTTP 500 Internal Server Error \(2 attempts\)",
    "loop": r"a redirect loop \(HTTP 302",
    "proxy": r"no answer within 0\.3 s \(2 attempts, through the proxy http://127\.0\.0\.1:\d+ set by http_proxy\)",
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("where", PATHS)
def test_each_download_path_meets_each_fault(where, fault, tmp_path, monkeypatch, quick_downloads, keras_cache,
                                             fault_server, silent_url):
    base = silent_url if fault == "silent" else f"{fault_server.base}/{fault}"
    if fault == "proxy":
        monkeypatch.setenv("http_proxy", silent_url)
    if where == "checkpoint" and fault == "other":
        pytest.skip("Model Garden publishes no checksum: other bytes are caught on reuse, by the recorded sha256 "
                    "(test_instance_model's test_imagenet_checkpoint_records_then_checks_each_files_sha256)")
    download, target = PATHS[where](base, tmp_path, monkeypatch, fault_server)
    started = time.monotonic()
    if EXPECTED[fault] is None:
        assert download() == target and target.read_bytes() == CONTENT
        assert not target.with_name(target.name + ".part").exists()
    else:
        error_type = ChecksumError if fault == "other" else DownloadError
        with pytest.raises(error_type, match=EXPECTED[fault]) as refused:
            download()
        message = str(refused.value)
        assert base in message and f"put it at {target}" in message
        assert not target.exists()
        # Only bytes of the published file are kept to resume: a cut short one, never other bytes.
        assert target.with_name(target.name + ".part").exists() == (fault == "short")
    assert time.monotonic() - started < 5, "a download test must end on its own within seconds"


def test_the_proxy_variables_are_read_at_each_download(quick_downloads, fault_server, silent_url, monkeypatch,
                                                       tmp_path):
    monkeypatch.setenv("http_proxy", silent_url)
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the loopback bypasses the proxy: the download goes direct
    assert fetch(f"{fault_server.base}/slow/file.bin", tmp_path / "file.bin").read_bytes() == CONTENT


def test_a_download_cut_short_resumes_from_its_part_file(quick_downloads, fault_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DOWNLOAD_RETRIES", "0")
    target = tmp_path / "cache" / "file.bin"
    part = target.with_name("file.bin.part")
    with pytest.raises(DownloadError, match=rf"cut short after {len(CONTENT) // 4} of {len(CONTENT)} bytes.*"
                                            rf"kept in {part} and resumed next time") as refused:
        fetch(f"{fault_server.base}/resume/file.bin", target, md5=hashlib.md5(CONTENT).hexdigest())
    assert refused.value.cause.startswith("cut short") and refused.value.path == target
    assert part.read_bytes() == CONTENT[: len(CONTENT) // 4] and not target.exists()
    # The next call asks only for the rest (HTTP Range) and the whole file passes its checksum.
    assert fetch(f"{fault_server.base}/resume/file.bin", target, md5=hashlib.md5(CONTENT).hexdigest()) == target
    assert target.read_bytes() == CONTENT and not part.exists()
    assert fault_server.hits["resume"] == 2


def test_a_file_published_without_checksum_is_recorded_then_checked_on_reuse(quick_downloads, fault_server,
                                                                             tmp_path):
    target = tmp_path / "file.bin"
    fetch(f"{fault_server.base}/slow/file.bin", target)
    record = recorded_sha256(target)
    assert record.read_text().split() == [hashlib.sha256(CONTENT).hexdigest(), "file.bin"]
    target.write_bytes(b"damaged in the cache")
    with pytest.raises(ChecksumError, match="Checksum mismatch for .*file.bin: expected sha256"):
        fetch(f"{fault_server.base}/slow/file.bin", target)


def test_a_copy_placed_by_hand_is_recorded_at_first_use(tmp_path):
    target = tmp_path / "placed.bin"
    target.write_bytes(CONTENT)
    assert fetch("http://127.0.0.1:9/placed.bin", target, download=False) == target
    assert recorded_sha256(target).read_text().split()[0] == hashlib.sha256(CONTENT).hexdigest()


def test_download_settings_have_defaults_and_refuse_bad_values(monkeypatch):
    monkeypatch.delenv("LAB_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.delenv("LAB_DOWNLOAD_RETRIES", raising=False)
    assert download_settings() == (30.0, 3)
    monkeypatch.setenv("LAB_DOWNLOAD_TIMEOUT", "2.5")
    monkeypatch.setenv("LAB_DOWNLOAD_RETRIES", "0")
    assert download_settings() == (2.5, 0)
    bad_values = (("LAB_DOWNLOAD_TIMEOUT", "0"), ("LAB_DOWNLOAD_TIMEOUT", "soon"), ("LAB_DOWNLOAD_RETRIES", "-1"))
    for name, value in bad_values:
        with monkeypatch.context() as bad:
            bad.setenv(name, value)
            with pytest.raises(ValueError, match=f"received .*{name}='{value}'"):
                download_settings()


def test_keras_application_weights_come_through_fetch_into_keras_cache(quick_downloads, keras_cache, silent_url,
                                                                       monkeypatch):
    """build_backbone on a network that never answers: a clear error within seconds, not a wait forever."""
    from keras.src.applications import mobilenet_v2

    from lab.models.backbones import WeightsNotAvailableError, build_backbone

    monkeypatch.setattr(mobilenet_v2, "BASE_WEIGHT_PATH", f"{silent_url}/")
    started = time.monotonic()
    with pytest.raises(WeightsNotAvailableError, match=r"no answer within 0\.3 s") as refused:
        build_backbone("mobilenetv2", 96, weights="imagenet")
    # Seconds, not forever: the bound leaves room for building the model on a loaded machine (13 s
    # seen on 2 shared cores), far under a wait without a timeout.
    assert time.monotonic() - started < 30
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert f"put it at {keras_cache / 'models' / name}" in str(refused.value)
    from keras.src.utils import file_utils

    assert file_utils.get_file.__module__ == "keras.src.utils.file_utils"  # Keras' own again afterwards


def test_keras_finds_the_fetched_weights_in_its_cache(quick_downloads, keras_cache, fault_server, monkeypatch,
                                                      tmp_path):
    """The file fetched is the one Keras looks for: the served weights end up in the backbone."""
    import keras
    import numpy as np
    from keras.src.applications import mobilenet_v2

    from download_servers import serve_file
    from lab.models.backbones import build_backbone

    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    served = tmp_path / "served.h5"
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    with h5py.File(served, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    serve_file(fault_server, "weights", served.read_bytes())
    monkeypatch.setattr(mobilenet_v2, "BASE_WEIGHT_PATH", f"{fault_server.base}/weights/")
    backbone = build_backbone("mobilenetv2", 96, weights="imagenet")
    assert all(np.array_equal(a, b) for a, b in zip(backbone.get_weights(), reference.get_weights(), strict=True))
    assert (keras_cache / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5").exists()


def test_a_resume_answered_from_another_byte_is_wrong_size_and_starts_again(quick_downloads, fault_server, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("LAB_DOWNLOAD_RETRIES", "0")
    target = tmp_path / "file.bin"
    part = target.with_name("file.bin.part")
    part.write_bytes(CONTENT[:100])
    with pytest.raises(DownloadError, match=r"wrong size \(the server resumed at another byte than the 100 asked\)"):
        fetch(f"{fault_server.base}/badrange/file.bin", target)
    assert not part.exists() and not target.exists()  # never appended to bytes from another offset
    assert fetch(f"{fault_server.base}/badrange/file.bin", target).read_bytes() == CONTENT



def test_tfds_preparation_waits_at_most_the_timeout(quick_downloads, silent_url, monkeypatch):
    """TFDS downloads with requests and no timeout: inside the kit's preparation each request is bounded."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import requests
    from tensorflow_datasets.core.download import downloader

    from lab.data.datasets.tfds import bounded_downloads, prepared_builder

    monkeypatch.setattr(downloader, "MAX_RETRIES", 1)  # TFDS's own retries (10, with backoff) are kept
    started = time.monotonic()
    with bounded_downloads(), pytest.raises(requests.exceptions.RequestException, match="timed out"):
        with downloader._open_url(f"{silent_url}/file.bin", verify=True):
            pass
    assert time.monotonic() - started < 5
    assert downloader._open_url.__module__ == downloader.__name__  # TFDS's own function again afterwards

    seen = []

    def prepare(*args, **kwargs):  # what a preparation meets: the bounded function
        seen.append(downloader._open_url.__qualname__)

    with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", side_effect=prepare):
        prepared_builder("mnist", download=True)
    assert seen == ["bounded_downloads.<locals>.bounded"]



# fault -> (the error TFDS raises, its phrase), or None where the download must succeed; TFDS's own
# errors (requests', its DownloadError) are kept: the kit adds the timeout only.
TFDS_EXPECTED = {
    "silent": ("ConnectionError", r"Read timed out\. \(read timeout=0\.3\)"),
    "slow": None,
    "short": ("ChunkedEncodingError", rf"IncompleteRead\({len(CONTENT) // 2} bytes read"),
    "other": None,  # received whole; TFDS's download manager compares its sha256 with the registered one
    "404": ("DownloadError", r"HTTP code: 404"),
    "500": ("RetryError", r"too many 500 error responses"),
    "loop": ("TooManyRedirects", r"Exceeded 30 redirects"),
    "proxy": ("ConnectionError", r"url: http://127\.0\.0\.1:\d+/proxy/file\.bin .*Read timed out"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_tfds_downloads_meet_each_fault_within_seconds(fault, quick_downloads, fault_server, silent_url, tmp_path,
                                                       monkeypatch):
    """TFDS's own download (the function every http file of a preparation goes through), bounded by the kit."""
    pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core.download import downloader

    from lab.data.datasets.tfds import bounded_downloads

    monkeypatch.setattr(downloader, "MAX_RETRIES", 1)  # TFDS's own retries (10, with backoff) are kept
    base = silent_url if fault == "silent" else f"{fault_server.base}/{fault}"
    if fault == "proxy":
        monkeypatch.setenv("http_proxy", silent_url)
    tfds_downloader = downloader._Downloader(max_simultaneous_downloads=1)
    started = time.monotonic()
    with bounded_downloads(), tfds_downloader.tqdm():
        if TFDS_EXPECTED[fault] is None:
            result = tfds_downloader._sync_download(f"{base}/file.bin", tmp_path, True)
            received = (tmp_path / "file.bin").read_bytes()
            assert (result.url_info.checksum == hashlib.sha256(CONTENT).hexdigest()) == (fault == "slow")
            assert received == (CONTENT if fault == "slow" else OTHER)
        else:
            error_name, phrase = TFDS_EXPECTED[fault]
            with pytest.raises(Exception, match=phrase) as refused:
                tfds_downloader._sync_download(f"{base}/file.bin", tmp_path, True)
            assert type(refused.value).__name__ == error_name
    assert time.monotonic() - started < 5, "a download test must end on its own within seconds"

# -- keras-hub presets: kagglehub's API requests and the file's transfer (lab/system/hub_download.py) --------


def test_a_kaggle_api_that_never_answers_fails_within_seconds(quick_downloads, silent_url, tmp_path, monkeypatch):
    """kagglesdk's API requests have no timeout of their own: here each waits 0.3 s, twice."""
    folder = _point_kagglehub_at(f"{silent_url}/kaggle-api", tmp_path, monkeypatch)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"from http://127\.0\.0\.1:\d+/kaggle-api/v1/models\.ModelApiService/"
                                            r"DownloadModelInstanceVersion: no answer within 0\.3 s \(2 attempts\)"
                       ) as refused:
        _preset_file()
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert f"put it at {folder / 'file.bin'}" in message
    assert str(tmp_path / "kagglehub" / "models" / "keras" / "resnetv1" / "keras" / "resnet_18_imagenet" / ".complete"
               / "3" / "file.bin.complete") in message  # kagglehub's mark, to make by hand too
    assert refused.value.path == folder / "file.bin"


def test_a_kaggle_api_server_error_is_retried_then_named(quick_downloads, fault_server, tmp_path, monkeypatch):
    _point_kagglehub_at(f"{fault_server.base}/api-500", tmp_path, monkeypatch)
    with pytest.raises(DownloadError, match=r"HTTP 500 Internal Server Error \(2 attempts\)"):
        _preset_file()
    assert fault_server.hits["api"] == 2


def test_a_preset_file_kaggle_does_not_have_stays_keras_hubs_missing_file(quick_downloads, fault_server, tmp_path,
                                                                          monkeypatch):
    """Kaggle's 404 is how keras-hub learns an optional preset file is absent: that answer is left to it."""
    from keras_hub.src.utils import preset_utils

    from lab.system.hub_download import keras_hub_downloads_through_fetch

    _point_kagglehub_at(f"{fault_server.base}/api-404", tmp_path, monkeypatch)
    with keras_hub_downloads_through_fetch():
        assert not preset_utils.check_file_exists("kaggle://keras/resnetv1/keras/resnet_18_imagenet/3", "task.json")


def test_a_failed_transfer_is_never_taken_for_a_missing_optional_file(quick_downloads, fault_server, tmp_path,
                                                                      monkeypatch):
    """The kit's DownloadError is a FileNotFoundError, which keras-hub reads as "no such optional file"."""
    from keras_hub.src.utils import preset_utils

    from lab.system.hub_download import keras_hub_downloads_through_fetch

    _point_kagglehub_at(f"{fault_server.base}/kaggle-api", tmp_path, monkeypatch)
    fault_server.redirect_to = f"{fault_server.base}/404"
    with pytest.raises(DownloadError, match="HTTP 404 Not Found"), keras_hub_downloads_through_fetch():
        preset_utils.check_file_exists("kaggle://keras/resnetv1/keras/resnet_18_imagenet/3", "task.json")


def test_a_fetched_preset_file_is_marked_complete_and_reused_offline(quick_downloads, fault_server, silent_url,
                                                                    tmp_path, monkeypatch):
    from kagglehub import http_resolver

    folder = _point_kagglehub_at(f"{fault_server.base}/kaggle-api", tmp_path, monkeypatch)
    fault_server.redirect_to = f"{fault_server.base}/slow"
    assert _preset_file() == folder / "file.bin" and (folder / "file.bin").read_bytes() == CONTENT
    assert (folder.parent / ".complete" / "3" / "file.bin.complete").exists()  # kagglehub's mark, made by kagglehub
    assert http_resolver.download_file.__module__ == "kagglehub.clients"  # kagglehub's own again afterwards
    _point_kagglehub_at(f"{silent_url}/kaggle-api", tmp_path, monkeypatch)  # offline now: the cache answers
    assert _preset_file() == folder / "file.bin"
    assert fault_server.hits == {"api": 1, "slow": 1}


def test_an_unfinished_copy_left_by_kagglehub_is_fetched_again(quick_downloads, fault_server, tmp_path, monkeypatch):
    """kagglehub writes straight to the file: without its mark (and fetch's record) the bytes are not trusted."""
    folder = _point_kagglehub_at(f"{fault_server.base}/kaggle-api", tmp_path, monkeypatch)
    fault_server.redirect_to = f"{fault_server.base}/slow"
    folder.mkdir(parents=True)
    (folder / "file.bin").write_bytes(CONTENT[:100])
    assert _preset_file().read_bytes() == CONTENT


def test_a_kagglehub_that_moved_what_is_patched_fails_loudly(monkeypatch):
    pytest.importorskip("keras_hub")
    from kagglehub import http_resolver

    from lab.system.hub_download import keras_hub_downloads_through_fetch

    monkeypatch.delattr(http_resolver, "download_file")
    with pytest.raises(RuntimeError, match=r"kagglehub \S+ no longer has kagglehub\.http_resolver\.download_file.*"
                                           r"written for kagglehub 1\.0\.2"):
        with keras_hub_downloads_through_fetch():
            pass


def test_storage_md5_reads_the_x_goog_hash_header():
    import email.message

    from lab.system.hub_download import storage_md5

    headers = email.message.Message()
    headers["x-goog-hash"] = "crc32c=n03x6A==,md5=Ojk9c3dhfxgoKVVHYwFbHQ=="
    assert storage_md5(headers) == {"md5": "3a393d7377617f182829554763015b1d"}
    assert storage_md5(email.message.Message()) == {}


def test_build_backbone_of_a_keras_hub_preset_offline_is_a_clear_error(quick_downloads, silent_url, tmp_path,
                                                                       monkeypatch):
    from lab.models.backbones import WeightsNotAvailableError, build_backbone

    _point_kagglehub_at(f"{silent_url}/kaggle-api", tmp_path, monkeypatch)
    started = time.monotonic()
    with pytest.raises(WeightsNotAvailableError, match=r"'resnet18' are not cached .*no answer within 0\.3 s"):
        build_backbone("resnet18", 32, weights="imagenet")
    assert time.monotonic() - started < 10


# -- two processes, one file -------------------------------------------------------------------------


def _fetch_in_another_process(url, target, barrier, results):
    """Fetches ``url`` once both processes are ready; reports the bytes and whether it had to wait."""
    import contextlib
    import io

    waited = io.StringIO()
    barrier.wait()
    try:
        with contextlib.redirect_stderr(waited):
            data = fetch(url, target, progress_bar=False).read_bytes()
    except Exception as error:  # reported to the test, which fails on it at once
        results.put((False, repr(error)))
        return
    results.put((data == CONTENT, "Waiting for another process" in waited.getvalue()))


def test_two_processes_fetching_one_file_take_turns(quick_downloads, fault_server, tmp_path):
    """The second waits on <file>.lock, then reuses the file the first finished (one request, not two)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process with TensorFlow's threads
    barrier, results = context.Barrier(2), context.Queue()
    target = tmp_path / "shared" / "file.bin"
    workers = [context.Process(target=_fetch_in_another_process,
                               args=(f"{fault_server.base}/slow/file.bin", target, barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=10)
    assert outcomes == [(True, False), (True, True)]  # both have the file; exactly one waited for the other
    assert fault_server.hits["slow"] == 1
    assert target.read_bytes() == CONTENT and not target.with_name("file.bin.part").exists()
    assert not target.with_name("file.bin.lock").exists()  # removed by the last holder: nothing left behind


def test_a_preset_file_the_storage_serves_zipped_is_unzipped_to_its_name(quick_downloads, fault_server, tmp_path,
                                                                          monkeypatch):
    """kagglehub's rule for a file served as <name>.zip, kept when the transfer is fetch's."""
    import io
    import zipfile

    import requests
    from kagglehub import http_resolver

    from download_servers import serve_file
    from lab.system.hub_download import _download_through_fetch

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("config.json", CONTENT)
    serve_file(fault_server, "zip", zipped.getvalue())
    redirect = requests.Response()  # Kaggle's API answer: where the file is
    redirect.status_code, redirect.url = 302, f"{fault_server.base}/kaggle-api/v1/DownloadModelInstanceVersion"
    redirect.headers["Location"], redirect.raw = "/zip/config.json.zip", io.BytesIO(b"")
    out = tmp_path / "preset" / "config.json"
    assert _download_through_fetch(http_resolver.download_file)(redirect, str(out), None,
                                                                extract_auto_compressed_file=True)
    assert out.read_bytes() == CONTENT and sorted(p.name for p in out.parent.iterdir()) == ["config.json"]


def test_exclusive_lets_one_holder_at_a_time_and_leaves_no_lock_file(tmp_path):
    """lab.system.atomic.exclusive, which fetch holds: the holder removes <file>.lock; a waiter that wakes on
    the removed file locks the new one, so removing it never lets two hold the lock at once."""
    import threading

    from lab.system.atomic import exclusive

    target, count, overlaps, inside = tmp_path / "file.bin", tmp_path / "count", [], threading.Event()

    def work():
        for _ in range(20):
            with exclusive(target):  # flock: separate open files conflict across threads too
                if inside.is_set():
                    overlaps.append(1)
                inside.set()
                count.write_text(str(int(count.read_text()) + 1) if count.exists() else "1")
                time.sleep(0.001)
                inside.clear()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert count.read_text() == "80" and not overlaps
    assert not target.with_name("file.bin.lock").exists()
