"""Backbones pretrained offline: the model is kept with a provenance sidecar, reused only when it
matches it (same configuration, same bytes), refused by name otherwise."""

import json
import threading
import time
from types import SimpleNamespace

import keras
import pytest

from lab.tasks import pretraining
from lab.config import RunConfig
from lab.system.download import file_hash
from lab.tasks.pretraining import (check_pretrained, pretrain_offline, pretrained_path, pretraining_config,
                             resolve_weights, sidecar_path)

# Cheap arguments for the fake run below (the real pretraining test uses its own).
CHEAP = dict(input_size=32, epochs=1, limit=60)


class FakeRun(list):
    """Stands in for the pretraining run: saves a tiny model at once (after ``delay`` seconds)
    and keeps the configurations it was called with."""

    def __init__(self, runs_dir):
        super().__init__()
        self.runs_dir, self.delay = runs_dir, 0.0

    def __call__(self, config, task):
        self.append(config)
        time.sleep(self.delay)
        run_dir = self.runs_dir / f"fake-run-{len(self)}"
        run_dir.mkdir(parents=True)
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(len(self) + 1)]).save(run_dir / "model.keras")
        return SimpleNamespace(status="completed", run_dir=run_dir, metrics={})


@pytest.fixture
def fake_run(monkeypatch, isolated_dirs):
    fake = FakeRun(isolated_dirs / "reports" / "runs")
    monkeypatch.setattr(pretraining, "run", fake)
    return fake


@pytest.fixture
def pretrained(fake_run):
    """A backbone 'pretrained' by the fake run, with its configuration."""
    path = pretrain_offline("resnet18", **CHEAP)
    return path, pretraining_config("resnet18", **CHEAP)


def test_pretraining_saves_a_sidecar_and_a_second_call_reuses_the_model(monkeypatch, isolated_dirs):
    # The real run, counted: the second call must not train again.
    calls = []
    real_run = pretraining.run
    monkeypatch.setattr(pretraining, "run", lambda config, task: calls.append(config) or real_run(config, task))
    # digits, 2 epochs, 150 images: the shortest pretraining that the runner records as completed
    # (with 60 images or one epoch it is "stalled: never learned", and nothing is kept).
    arguments = dict(dataset="digits", input_size=32, epochs=2, limit=150)
    first = pretrain_offline("resnet18", **arguments)
    modified = first.stat().st_mtime_ns
    second = pretrain_offline("resnet18", **arguments)
    assert second == first and len(calls) == 1 and first.stat().st_mtime_ns == modified

    config = calls[0]
    assert first.name == f"resnet18-digits-{config.config_hash()}.keras" and first.parent.name == "pretrained"
    sidecar = json.loads(sidecar_path(first).read_text())
    assert sidecar["config_hash"] == config.config_hash()
    assert sidecar["config"]["epochs"] == 2 and sidecar["config"]["limit"] == 150
    assert not {"name", "tags", "reports_dir", "verbose"} & set(sidecar["config"])
    assert sidecar["sha256"] == file_hash(first, "sha256") and sidecar["bytes"] == first.stat().st_size
    assert set(sidecar["versions"]) == {"lab", "keras", "tensorflow"}
    assert (isolated_dirs / "reports" / "runs" / sidecar["run_id"] / "model.keras").is_file()
    assert sorted(p.name for p in first.parent.iterdir() if p.name.startswith(".tmp")) == []


def test_a_matching_model_is_reused_and_resolve_weights_goes_through_the_check(fake_run):
    config = RunConfig(model="transfer", backbone="resnet18", weights="pretrain-offline", backbone_input_size=32,
                       dataset="digits")
    resolved = resolve_weights(config)
    assert resolve_weights(config).weights == resolved.weights and len(fake_run) == 1
    path = pretrained_path(pretraining_config("resnet18", input_size=32))
    assert resolved.weights == str(path)

    with open(path, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match=f"The pretrained backbone {path} does not match .*the file changed"):
        resolve_weights(config)
    assert len(fake_run) == 1, "a file that does not match is refused, never trained over"


def test_a_sidecar_of_another_configuration_is_refused(pretrained):
    path, config = pretrained
    sidecar = sidecar_path(path)
    record = json.loads(sidecar.read_text())
    record["config"]["epochs"], record["config_hash"] = 4, "0123456789ab"
    sidecar.write_text(json.dumps(record))
    with pytest.raises(ValueError) as refused:
        pretrain_offline("resnet18", **CHEAP)
    message = str(refused.value)
    assert str(path) in message and "pretrained with another configuration" in message
    assert "epochs 4 in the sidecar, 1 asked" in message
    assert f"config hash 0123456789ab in {sidecar.name}, {config.config_hash()} asked" in message
    assert "Delete it; the kit pretrains the backbone again" in message


def test_a_modified_model_file_is_refused(pretrained):
    path, config = pretrained
    recorded = json.loads(sidecar_path(path).read_text())["sha256"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as refused:
        check_pretrained(path, config)
    message = str(refused.value)
    assert str(path) in message and "the file changed after it was saved" in message
    assert f"sha256 {recorded[:16]}... in {sidecar_path(path).name}" in message
    assert file_hash(path, "sha256")[:16] in message


def test_a_model_without_sidecar_is_pretrained_again_not_trusted(pretrained, fake_run, capsys):
    path, _ = pretrained
    sidecar_path(path).unlink()  # as an older kit left it
    with pytest.raises(ValueError, match=f"The pretrained backbone {path} has no sidecar {path.stem}.json"):
        check_pretrained(path, pretraining_config("resnet18", **CHEAP))
    assert pretrain_offline("resnet18", **CHEAP) == path and len(fake_run) == 2
    assert "has no provenance sidecar (an older kit saved it): pretraining it again" in capsys.readouterr().out
    assert check_pretrained(path, pretraining_config("resnet18", **CHEAP))["sha256"] == file_hash(path, "sha256")


def test_an_unreadable_sidecar_is_refused(pretrained):
    path, config = pretrained
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ValueError, match=f"The sidecar {sidecar_path(path)} of the pretrained backbone {path} is "
                                         "not valid JSON"):
        check_pretrained(path, config)
    sidecar_path(path).write_text(json.dumps({"config_hash": config.config_hash()}))
    with pytest.raises(ValueError, match="is not a pretrained-backbone sidecar"):
        check_pretrained(path, config)


def test_a_stalled_pretraining_keeps_nothing(monkeypatch, isolated_dirs):
    run_dir = isolated_dirs / "reports" / "runs" / "stalled"
    monkeypatch.setattr(pretraining, "run", lambda config, task: SimpleNamespace(
        status="stalled", run_dir=run_dir, metrics={"divergence_reason": "never learned"}))
    with pytest.raises(RuntimeError, match="Pretraining resnet18 on shapes ended stalled: never learned"):
        pretrain_offline("resnet18", **CHEAP)
    path = pretrained_path(pretraining_config("resnet18", **CHEAP))
    assert not path.exists() and not sidecar_path(path).exists()


def test_two_processes_asking_at_once_train_once(fake_run):
    # Parallel jobs of a batch: the second waits for the first's model instead of training again
    # and overwriting it (the two files' bytes, and so their sha256, would differ).
    fake_run.delay = 0.5
    paths, errors = [], []

    def ask():
        try:
            paths.append(pretrain_offline("resnet18", **CHEAP))
        except Exception as error:  # reported below, with the test's failure
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(fake_run) == 1 and paths[0] == paths[1]
    check_pretrained(paths[0], pretraining_config("resnet18", **CHEAP))


def test_each_backbone_family_pretrains_with_its_recipe():
    """Transformers from scratch need a smaller rate, more epochs and augmentation to learn the shapes
    clearly; the CNNs keep the plain recipe; explicit arguments win."""
    deit, resnet = pretraining_config("deit_tiny"), pretraining_config("resnet18")
    assert (deit.epochs, deit.learning_rate, deit.augment, deit.aug_flip) == (14, 1e-4, True, "horizontal")
    assert (resnet.epochs, resnet.learning_rate, resnet.augment, resnet.limit) == (10, 1e-3, False, 1200)
    assert pretraining_config("deit_tiny", epochs=2, learning_rate=0.5).epochs == 2
    assert deit.config_hash() != pretraining_config("deit_tiny", epochs=2).config_hash()
