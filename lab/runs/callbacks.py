"""Training callbacks: the E4 epoch log line, an epoch timer, divergence, best weights.

Each follows Keras' EarlyStopping: configuration through keyword arguments, state reset in
``on_train_begin`` so one instance can be reused, and testable by calling the hooks directly.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import keras
import numpy as np

from lab.runs.records import NEVER_LEARNED


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the epoch, validation included) to the logs.

    Put it before the CSV logger so the time lands in the history file.
    """

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        self.seconds.append(elapsed)
        if logs is not None:
            logs["epoch_seconds"] = elapsed


class EpochLogLine(keras.callbacks.Callback):
    """Prints one line per epoch, the format students paste into reports (E4).

    ``Epoch 2/5 | TrainLoss: 3.2595 | ValLoss: 2.8028 | TrainAcc: 19.08% | ValAcc: 28.26% | 1.2s``

    Args:
        epochs: total epochs planned (the denominator).
        print_fn: where lines go (``print`` by default; a list's ``append`` in tests).
        fields: ``(label, logged key, as a percentage)`` of each value shown (default: E4's).
    """

    def __init__(self, epochs: int, print_fn: Callable[[str], None] = print,
                 fields: tuple[tuple[str, str, bool], ...] | None = None):
        super().__init__()
        self.epochs = epochs
        self.print_fn = print_fn
        self.fields = fields or EPOCH_LINE_FIELDS

    def on_epoch_end(self, epoch, logs=None):
        self.print_fn(format_epoch_line(epoch + 1, self.epochs, logs or {}, self.fields))


EPOCH_LINE_FIELDS = (("TrainLoss", "loss", False), ("ValLoss", "val_loss", False),
                     ("TrainAcc", "accuracy", True), ("ValAcc", "val_accuracy", True))


def format_epoch_line(epoch: int, epochs: int, logs: dict,
                      fields: tuple[tuple[str, str, bool], ...] = EPOCH_LINE_FIELDS) -> str:
    """Formats the E4 log line from Keras logs (missing values are left out)."""
    parts = [f"Epoch {epoch}/{epochs}"]
    for label, key, percent in fields:
        if key in logs:
            value = float(logs[key])
            parts.append(f"{label}: {value * 100:.2f}%" if percent else f"{label}: {value:.4f}")
    if "epoch_seconds" in logs:
        parts.append(f"{float(logs['epoch_seconds']):.1f}s")
    return " | ".join(parts)


# How a divergence reason starts when the loss became NaN or infinite, or grew (readers of records
# match them; a stalled run's reason starts with lab.runs.records.NEVER_LEARNED).
NON_FINITE_LOSS = "training loss became"
LOSS_GREW = "training loss grew"


def can_judge(threshold: float) -> bool:
    """Whether a validation split can tell learning from chance: a perfect accuracy passes its
    threshold (chance + margin). On two images three standard errors are more than the whole
    range of accuracies, and not even a perfect run would pass."""
    return threshold < 1.0


class DivergenceMonitor(keras.callbacks.Callback):
    """Says, and records, that a run diverged or stalled, instead of letting it crash or waste epochs.

    After training, ``status`` is a run status (``lab.runs.records.STATUSES``) or None, and ``reason``
    explains:
      * "diverged": its training loss became NaN or infinite (checked every batch), or an epoch's
        training loss grew to more than ``loss_growth`` times where the fit started: the larger of
        its first step's loss and the loss of a uniform guess (``baseline_loss``); without either
        (several steps per compiled call hide the first step, and a task without a chance level
        has no baseline), its first epoch's. Training stops at once.
      * "stalled": its loss stayed finite but it never learned: its validation accuracy is never
        clearly above chance, where chance is the better of a uniform guess (1/k) and always
        answering the majority class, and "clearly" means by more than ``accuracy_margin``. A run
        that learns slowly (its loss still near ln k, its accuracy already above chance) is neither.

    "Never" is judged when the run is over: ``finish()``, which the runner calls once after the
    last fit of a run (progressive unfreezing fits several times). Training stops early only when, after ``patience``
    epochs, the accuracy is still at chance *and* the training loss has not fallen below
    ``(1 - min_delta) * baseline_loss`` (ln k, a uniform guess) *and* the training accuracy
    (when logged) has not passed chance either: E4's Adam at lr 1e-2 that "never learns"
    (accuracy stuck at 1%, loss at ln 100 = 4.6) stops after three epochs, while a network whose
    loss started far above ln k and whose training accuracy climbs (E9's basic CNN, before its
    BatchNorm statistics settle) trains on.

    A validation split too small to tell learning from chance (``can_judge``: two images) stalls
    no run: its status says only whether the loss stayed finite, and ``note`` says so.

    Args:
        chance_accuracy: the accuracy of an uninformed model (None: only the loss is checked).
        accuracy_margin: how far above chance the validation accuracy must get to count.
        baseline_loss: the loss of a uniform guess, for stopping early (None: never early).
        patience: epochs before a run stuck at chance is stopped.
        min_delta: the relative fall of the loss below the baseline that counts as learning.
        monitor: the logged validation accuracy.
        loss_growth: how many times its start an epoch's training loss may reach before the run
            has diverged (None: only a non-finite loss).
        val_examples: how many examples the validation accuracy is measured on (named in ``note``).

    Example:
        >>> DivergenceMonitor(chance_accuracy=0.1, accuracy_margin=0.05, baseline_loss=math.log(10))
    """

    def __init__(self, chance_accuracy: float | None = None, accuracy_margin: float = 0.0,
                 baseline_loss: float | None = None, patience: int = 3, min_delta: float = 0.02,
                 monitor: str = "val_accuracy", loss_growth: float | None = 10.0, val_examples: int | None = None):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, received {patience}.")
        if loss_growth is not None and not loss_growth > 1:
            raise ValueError(f"loss_growth must be a factor above 1 (or None), received {loss_growth!r}.")
        self.chance_accuracy = chance_accuracy
        self.accuracy_margin = accuracy_margin
        self.baseline_loss = baseline_loss
        self.patience = patience
        self.min_delta = min_delta
        self.monitor = monitor
        self.loss_growth = loss_growth
        self.val_examples = val_examples
        self.run_best_accuracy: float | None = None  # over all of a run's fits, set by finish()

    def on_train_begin(self, logs=None):
        self.status: str | None = None
        self.reason: str | None = None
        self.start_loss: float | None = None  # where this fit started (see the class docstring)
        self.best_loss = math.inf
        self.best_accuracy = -math.inf
        self.best_train_accuracy = -math.inf
        self.epochs_seen = 0

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def stalled(self) -> bool:
        return self.status == "stalled"

    @property
    def note(self) -> str | None:
        """Why the run's status cannot say whether it learned (a validation split too small), or None."""
        if self.chance_accuracy is None or can_judge(self._threshold()):
            return None
        split = "the validation split" + (f" ({self.val_examples} examples)" if self.val_examples is not None else "")
        return (f"{split} is too small to judge whether the run learned: its chance threshold "
                f"({self.chance_accuracy:.4f} + margin {self.accuracy_margin:.4f} = {self._threshold():.4f}) is "
                f"above a perfect {self.monitor}, so the run was not judged stalled; its status says only whether "
                f"its loss stayed finite. Validate on more examples to judge it.")

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self._stop("diverged", f"{NON_FINITE_LOSS} {loss} at batch {batch + 1}")
        elif batch == 0 and self.start_loss is None:  # the first step alone, not a mean over a call's steps
            self.start_loss = max(loss, self.baseline_loss or 0.0)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = float(logs.get("loss", np.nan))
        if not math.isfinite(loss):
            self._stop("diverged", f"{NON_FINITE_LOSS} {loss} in epoch {epoch + 1}")
            return
        if self.start_loss is None:
            self.start_loss = self.baseline_loss if self.baseline_loss is not None else loss
        if self.loss_growth is not None and loss > self.loss_growth * self.start_loss:
            self._stop("diverged", f"{LOSS_GREW} to {loss:.4g} in epoch {epoch + 1}, more than {self.loss_growth:g} "
                                   f"times where it started ({self.start_loss:.4f})")
            return
        self.epochs_seen += 1
        self.best_loss = min(self.best_loss, loss)
        accuracy = logs.get(self.monitor)
        if accuracy is not None and math.isfinite(float(accuracy)):
            self.best_accuracy = max(self.best_accuracy, float(accuracy))
        trained = logs.get(self.monitor.removeprefix("val_"))
        if trained is not None and math.isfinite(float(trained)):
            self.best_train_accuracy = max(self.best_train_accuracy, float(trained))
        if self.status or self.baseline_loss is None or not self._at_chance() or self.epochs_seen < self.patience \
                or not self._at_chance(self.best_train_accuracy):
            return
        threshold = (1.0 - self.min_delta) * self.baseline_loss
        if self.best_loss > threshold:
            self._stop("stalled", f"{NEVER_LEARNED}: in {self.epochs_seen} epochs the best {self.monitor} was "
                                  f"{self.best_accuracy:.4f}, not above chance ({self.chance_accuracy:.4f} + margin "
                                  f"{self.accuracy_margin:.4f}), and the training loss never fell below "
                                  f"{threshold:.4f} (chance level {self.baseline_loss:.4f}; best {self.best_loss:.4f})")

    def finish(self, best_accuracy: float | None = None, epochs: int | None = None) -> None:
        """Judges, once the run is over, whether it ever learned.

        Args:
            best_accuracy, epochs: over the whole run when it had several fits (each fit resets
                the callback's own counts); by default this fit's.
        """
        best = self.best_accuracy if best_accuracy is None else best_accuracy
        epochs = self.epochs_seen if epochs is None else epochs
        self.run_best_accuracy = best
        if not self.status and epochs and self._at_chance(best):
            self.status = "stalled"
            self.reason = (f"{NEVER_LEARNED}: the best {self.monitor} in {epochs} epochs was {best:.4f}, not above "
                           f"chance ({self.chance_accuracy:.4f}, the better of 1/k and the majority class) by more "
                           f"than {self.accuracy_margin:.4f}")

    def chance_record(self) -> dict[str, float] | None:
        """The rule's figures for the run record, after ``finish``: the chance accuracy, the
        threshold a run must pass to have learned (chance + margin), the loss of a uniform
        guess and the run's best accuracy, so a reader sees by how much a run passed or missed
        it (None without a chance level)."""
        if self.chance_accuracy is None:
            return None
        best = self.best_accuracy if self.run_best_accuracy is None else self.run_best_accuracy
        return {"accuracy": self.chance_accuracy, "threshold": self._threshold(),
                "baseline_loss": self.baseline_loss, f"best_{self.monitor}": best if math.isfinite(best) else None}

    def _threshold(self) -> float:
        return self.chance_accuracy + self.accuracy_margin

    def _at_chance(self, best: float | None = None) -> bool:
        best = self.best_accuracy if best is None else best
        return self.chance_accuracy is not None and can_judge(self._threshold()) and best <= self._threshold()

    def _stop(self, status: str, reason: str) -> None:
        if not self.status:
            self.status, self.reason = status, reason
        if self.model is not None:
            self.model.stop_training = True


class RestoreBestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by ``monitor`` and restores them when training ends.

    Keras' EarlyStopping restores the best weights only when it stops training itself; when a
    run uses all its epochs the final weights stay, which makes "best epoch" metrics wrong.
    This callback restores them in every case, so the evaluated model is the best one.

    Args:
        monitor: the logged quantity to watch.
        mode: ``"min"`` or ``"max"``.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', received {mode!r}.")
        self.monitor = monitor
        self.mode = mode

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if (value < self.best) if self.mode == "min" else (value > self.best):
            self.best, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
