"""Learning-rate schedules as configuration fields, and the learning rate of every epoch.

``lr_schedule`` picks one (the other fields only tune it):

    None        the constant ``learning_rate`` (the course's E1 recipe)
    "cosine"    per step: a linear warm-up from 0 to ``learning_rate`` over ``warmup_epochs``,
                then a cosine decay to 0 at the last step of the run
                (``keras.optimizers.schedules.CosineDecay`` with ``warmup_target``)
    "step"      the rate is multiplied by ``lr_decay_factor`` at the fractions ``lr_decay_at`` of
                the run's epochs (MedMNIST's ResNet baseline: 0.1 at 50% and 75%, as PyTorch's
                ``MultiStepLR(milestones=[0.5 E, 0.75 E], gamma=0.1)``); epoch e (from 0) trains at
                ``learning_rate * lr_decay_factor ** (number of boundaries <= e)`` where a
                boundary is ``ceil(fraction * epochs)``
    "plateau"   multiplied by ``lr_decay_factor`` when ``monitor`` has not improved for
                ``plateau_patience`` epochs (``keras.callbacks.ReduceLROnPlateau``)

The schedule spans the whole run. A run of several phases (progressive unfreezing) gives each
phase a new optimizer at its own base rate; the schedule's shape still runs over all the
run's epochs, so phase k starts where phase k-1 stopped, scaled to the phase's base rate. Restoring the best
weights does not touch the learning rate. The optimizer saved in ``model.keras`` holds Keras'
own ``CosineDecay``/``PiecewiseConstantDecay``, except after the first phase of a cosine run:
its ``OffsetSchedule`` (registered as ``lab>OffsetSchedule``) is known to Keras once
``lab.config.schedules.register()`` has run; ``load_model(..., compile=False)`` needs nothing.

Every run's ``history.csv`` has a ``learning_rate`` column (``LearningRateLog``): the rate of
the epoch's last training step, which for the per-step cosine is the value of the schedule at
that step, and for the epoch-wise schedules the rate the whole epoch used. (Keras itself logs
a rate only with ``ReduceLROnPlateau``/``LearningRateScheduler``, and then the rate for the
*next* epoch.) A transfer model with ``backbone_lr_factor`` logs the head's rate.

This module does not import Keras until a schedule is made: the configuration imports it to
validate its fields.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

SCHEDULES = (None, "cosine", "step", "plateau")
# MedMNIST's baseline (experiments/MedMNIST2D/train_and_eval_pytorch.py): milestones at 50% and
# 75% of the epochs, gamma 0.1.
DEFAULT_DECAY_AT = (0.5, 0.75)
DEFAULT_DECAY_FACTOR = 0.1
DEFAULT_PLATEAU_PATIENCE = 5


def check_schedule(config: Any) -> None:
    """Refuses schedule fields that are invalid or that the chosen schedule would ignore.

    Args:
        config: a configuration with ``lr_schedule``, ``warmup_epochs``, ``lr_decay_at``,
            ``lr_decay_factor``, ``plateau_patience`` and ``epochs``.

    Raises:
        ValueError: naming the field, the value received and what is allowed.
    """
    schedule = config.lr_schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(repr(s) for s in SCHEDULES)}, received "
                         f"lr_schedule={schedule!r}.")
    warmup = config.warmup_epochs
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup_epochs must be a non-negative integer, received warmup_epochs={warmup!r}.")
    if warmup and schedule != "cosine":
        raise ValueError(f"warmup_epochs goes with lr_schedule='cosine' (a linear warm-up, then the cosine decay); "
                         f"received warmup_epochs={warmup} with lr_schedule={schedule!r}.")
    if warmup and warmup >= config.epochs:
        raise ValueError(f"warmup_epochs={warmup} leaves no epoch for the cosine decay of a run of epochs="
                         f"{config.epochs}; use fewer warm-up epochs.")
    decay_at = config.lr_decay_at
    if decay_at is not None:
        if schedule != "step":
            raise ValueError(f"lr_decay_at goes with lr_schedule='step'; received lr_decay_at={decay_at} with "
                             f"lr_schedule={schedule!r}.")
        if not decay_at or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0
                               for f in decay_at) or list(decay_at) != sorted(set(decay_at)):
            raise ValueError(f"lr_decay_at must be increasing fractions of the epochs, each between 0 and 1 "
                             f"(e.g. [0.5, 0.75]); received lr_decay_at={decay_at}.")
    factor = config.lr_decay_factor
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.0 < factor < 1.0:
        raise ValueError(f"lr_decay_factor must be between 0 and 1 (0.1 divides the rate by 10), received "
                         f"lr_decay_factor={factor!r}.")
    if factor != DEFAULT_DECAY_FACTOR and schedule not in ("step", "plateau"):
        raise ValueError(f"lr_decay_factor goes with lr_schedule='step' or 'plateau'; received lr_decay_factor="
                         f"{factor} with lr_schedule={schedule!r}.")
    patience = config.plateau_patience
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise ValueError(f"plateau_patience must be a positive integer, received plateau_patience={patience!r}.")
    if patience != DEFAULT_PLATEAU_PATIENCE and schedule != "plateau":
        raise ValueError(f"plateau_patience goes with lr_schedule='plateau'; received plateau_patience={patience} "
                         f"with lr_schedule={schedule!r}.")


def decay_epochs(fractions: Sequence[float], epochs: int) -> list[int]:
    """The epochs (from 0) at which step decay lowers the rate: the first epoch that starts
    once ``fraction * epochs`` epochs are done, ``ceil(fraction * epochs)`` (100 epochs: 50 and
    75, as MedMNIST's; 5 epochs: 3 and 4).

    Boundaries at 0 or at ``epochs`` (a run too short for them) are dropped, and a boundary
    counts once.
    """
    # round(..., 9) keeps float error (0.3 * 10 = 3.0000000000000004) from moving a boundary.
    return sorted({b for b in (math.ceil(round(f * epochs, 9)) for f in fractions) if 0 < b < epochs})


def epoch_multiplier(config: Any, epoch: int, total_epochs: int) -> float:
    """What step decay multiplies the base rate by in ``epoch`` (from 0) of a run of
    ``total_epochs``: the closed form the tests check the history against."""
    boundaries = decay_epochs(config.lr_decay_at or DEFAULT_DECAY_AT, total_epochs)
    return config.lr_decay_factor ** sum(epoch >= b for b in boundaries)


def cosine_rate(base_rate: float, step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The cosine schedule's rate at ``step`` (from 0): the formula ``CosineDecay`` computes."""
    if step < warmup_steps:
        return base_rate * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    fraction = min(step - warmup_steps, decay_steps) / decay_steps
    return base_rate * 0.5 * (1.0 + math.cos(math.pi * fraction))


def make_schedule(config: Any, base_rate: float, *, first_epoch: int, total_epochs: int, steps_per_epoch: int):
    """The per-step schedule of a fit that starts at ``first_epoch`` of the run, or None.

    Args:
        config: the run's configuration.
        base_rate: the optimizer's rate before scheduling (a phase's own rate).
        first_epoch: the run's epoch (from 0) at which this fit starts.
        total_epochs: the run's epochs over all its phases.
        steps_per_epoch: training steps in one epoch.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule`` for "cosine" and "step"; a float
        for a step-decay fit that starts after its last boundary (the decayed constant rate);
        None for no schedule, "plateau" (a callback changes the rate, see
        ``schedule_callbacks``) and a run too short for any step boundary.

    Raises:
        ValueError: a warm-up as long as the run.
    """
    import keras

    if config.lr_schedule not in ("cosine", "step"):
        return None
    total_steps = total_epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        warmup_steps = config.warmup_epochs * steps_per_epoch
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_epochs={config.warmup_epochs} leaves no epoch for the cosine decay of a run of "
                             f"{total_epochs} epochs; use fewer warm-up epochs.")
        if warmup_steps:
            inner = keras.optimizers.schedules.CosineDecay(0.0, total_steps - warmup_steps, warmup_target=base_rate,
                                                           warmup_steps=warmup_steps)
        else:
            inner = keras.optimizers.schedules.CosineDecay(base_rate, total_steps)
        # Keras' own schedule where it can be (it saves and loads with the model anywhere); a
        # later phase needs the cosine's continuation, which only an offset can express.
        return inner if first_epoch == 0 else _offset_schedule_class()(inner, first_epoch * steps_per_epoch)
    # Step decay seen from this fit: the boundaries still ahead, counted from its first step,
    # and the rate already reached (decays before this fit's first epoch have happened).
    epochs = decay_epochs(config.lr_decay_at or DEFAULT_DECAY_AT, total_epochs)
    done = sum(b <= first_epoch for b in epochs)
    boundaries = [(b - first_epoch) * steps_per_epoch for b in epochs if b > first_epoch]
    rates = [base_rate * config.lr_decay_factor ** (done + k) for k in range(len(boundaries) + 1)]
    if not boundaries:
        return None if done == 0 else rates[0]  # a constant, already decayed rate for the rest of the run
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, rates)


def install(optimizer: Any, config: Any, *, first_epoch: int, total_epochs: int, steps_per_epoch: int | None):
    """Replaces a compiled model's (not yet used) optimizer's constant rate with the
    configured schedule; returns the schedule, or None when the rate stays a variable.

    Args:
        optimizer: ``model.optimizer`` after ``compile`` (a loss-scale wrapper is looked through).
        config, first_epoch, total_epochs: as for ``make_schedule``.
        steps_per_epoch: training steps in one epoch (None: unknown).

    Raises:
        ValueError: a per-step schedule for a pipeline whose length is unknown.
    """
    if config.lr_schedule not in ("cosine", "step"):
        return None
    if not steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(f"lr_schedule={config.lr_schedule!r} needs the number of training steps per epoch, but the "
                         "training pipeline's length is unknown. Give the pipeline a known length (tf.data "
                         "assert_cardinality) or use lr_schedule='plateau'.")
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = make_schedule(config, float(inner.learning_rate), first_epoch=first_epoch, total_epochs=total_epochs,
                             steps_per_epoch=steps_per_epoch)
    if schedule is None:
        return None
    inner.learning_rate = schedule
    return None if isinstance(schedule, float) else schedule


def register() -> None:
    """Makes the kit's ``OffsetSchedule`` known to Keras, so that ``keras.models.load_model``
    can rebuild the optimizer of a model saved after the first phase of a cosine run."""
    _offset_schedule_class()


def schedule_callbacks(config: Any, schedule: Any = None) -> list:
    """The callbacks a fit needs for the schedule: ReduceLROnPlateau for "plateau", then
    always ``LearningRateLog`` (after it, so the logged rate is the epoch's, not the next one's).

    Args:
        config: the run's configuration (``monitor`` and its mode drive the plateau).
        schedule: what ``install`` returned.
    """
    import keras

    callbacks = []
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=config.monitor, mode=config.monitor_mode,
                                                           factor=config.lr_decay_factor,
                                                           patience=config.plateau_patience, verbose=0))
    callbacks.append(_log_class()(schedule=schedule))
    return callbacks


def steps_per_epoch(dataset: Any, declared: int | None = None) -> int | None:
    """Training steps in one epoch: ``declared`` if given, else the dataset's cardinality
    (None when tf.data cannot tell)."""
    if declared:
        return int(declared)
    import tensorflow as tf

    count = int(dataset.cardinality())
    return None if count in (int(tf.data.UNKNOWN_CARDINALITY), int(tf.data.INFINITE_CARDINALITY)) else count


_CLASSES: dict[str, type] = {}


def _offset_schedule_class() -> type:
    """``OffsetSchedule``, defined on first use so that importing this module stays light."""
    if "offset" not in _CLASSES:
        import keras

        @keras.saving.register_keras_serializable(package="lab")
        class OffsetSchedule(keras.optimizers.schedules.LearningRateSchedule):
            """``inner(step + offset)``: a run-long schedule seen from a fit that starts later
            (a fresh optimizer counts its steps from 0)."""

            def __init__(self, inner, offset: int = 0):
                self.inner = inner
                self.offset = int(offset)

            def __call__(self, step):
                return self.inner(keras.ops.cast(step, "float32") + float(self.offset))

            def get_config(self):
                return {"inner": keras.saving.serialize_keras_object(self.inner), "offset": self.offset}

            @classmethod
            def from_config(cls, config):
                return cls(keras.saving.deserialize_keras_object(config["inner"]), config["offset"])

        _CLASSES["offset"] = OffsetSchedule
    return _CLASSES["offset"]


def _log_class() -> type:
    """``LearningRateLog``, defined on first use (see ``_offset_schedule_class``)."""
    if "log" not in _CLASSES:
        import keras
        import numpy as np

        class LearningRateLog(keras.callbacks.Callback):
            """Adds ``learning_rate`` to every epoch's logs: the rate of the epoch's last step.

            A schedule is evaluated at that step (the optimizer's own ``learning_rate`` would
            give the next step's rate); a constant or plateau rate is read when the epoch
            begins, before ReduceLROnPlateau changes it for the next epoch.

            Args:
                schedule: the optimizer's LearningRateSchedule, or None for a rate variable.
            """

            def __init__(self, schedule=None):
                super().__init__()
                self.schedule = schedule

            def _optimizer(self):
                optimizer = self.model.optimizer
                return getattr(optimizer, "inner_optimizer", optimizer)

            def on_epoch_begin(self, epoch, logs=None):
                self._rate = None if self.schedule is not None else float(np.asarray(self._optimizer().learning_rate))

            def on_epoch_end(self, epoch, logs=None):
                if logs is None:
                    return
                if self.schedule is not None:
                    last_step = max(int(np.asarray(self._optimizer().iterations)) - 1, 0)
                    logs["learning_rate"] = float(np.asarray(self.schedule(last_step)))
                else:
                    logs["learning_rate"] = self._rate

        _CLASSES["log"] = LearningRateLog
    return _CLASSES["log"]


__all__ = ["SCHEDULES", "check_schedule", "cosine_rate", "decay_epochs", "epoch_multiplier", "install",
           "make_schedule", "register", "schedule_callbacks", "steps_per_epoch"]
