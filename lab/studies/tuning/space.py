"""Search spaces written as plain dicts, and keras-tuner hyperparameters made from them.

A search space is what a notebook's parameters cell can hold: one entry per configuration
field to tune, each a literal.

    {"learning_rate": {"log": [1e-4, 1e-2]},          # hp.Float, log sampling
     "filters": [16, 32, 64],                          # hp.Choice
     "normalization": ["none", "batch", "layer"],     # hp.Choice
     "dropout_rate": {"min": 0.0, "max": 0.5, "step": 0.1},  # hp.Float (hp.Int for ints)
     "momentum": {"values": [0.0, 0.9], "when": {"optimizer": ["sgd"]}}}  # conditional

Forms of an entry:

* a list: ``hp.Choice`` over its values (the first is the default). Values keras-tuner cannot
  hold in a Choice (lists such as ``head_units=[[], [256]]``, None, or mixed types) are kept
  as their JSON text and decoded again when the trial's configuration is made.
* ``{"values": [...]}``: the same, with the options below.
* ``{"min": a, "max": b}`` with optional ``"step"``, ``"sampling"`` ("linear", "log",
  "reverse_log") and ``"default"``: ``hp.Int`` when a, b (and step) are integers, otherwise
  ``hp.Float``. ``{"log": [a, b]}`` is short for ``{"min": a, "max": b, "sampling": "log"}``.
* ``"when": {"parent": [values]}`` in a dict entry: the hyperparameter is active only when an
  earlier Choice entry ``parent`` takes one of those values (keras-tuner's conditional scope);
  when inactive the base configuration's value is used.

Everything else (the dataset, epochs, batch size...) comes from the base configuration.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import keras_tuner

from lab.config import BaseConfig
from lab.tasks import TASKS

# Names keras-tuner (and the kit) put into a trial's hyperparameters besides the space's.
TUNER_PREFIX = "tuner/"
LAB_PREFIX = "lab/"
SAMPLINGS = ("linear", "log", "reverse_log")
_ENTRY_KEYS = {"values", "min", "max", "step", "sampling", "default", "log", "when"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One hyperparameter of a space, parsed and checked."""

    name: str
    kind: str  # "choice", "int" or "float"
    values: tuple = ()  # choice values as keras-tuner holds them (JSON text when encoded)
    encoded: bool = False  # choice values are JSON text, decoded for the configuration
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    default: Any = None
    when: tuple[str, tuple] | None = None  # (parent name, parent values as keras-tuner holds them)

    def declare(self, hp: keras_tuner.HyperParameters) -> Any:
        """Registers this hyperparameter in ``hp`` and returns its value for the trial."""
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values), default=self.default)
        if self.kind == "int":
            return hp.Int(self.name, int(self.min), int(self.max), step=None if self.step is None else int(self.step),
                          sampling=self.sampling, default=self.default)
        return hp.Float(self.name, float(self.min), float(self.max), step=self.step, sampling=self.sampling,
                        default=self.default)

    def decode(self, value: Any) -> Any:
        """The configuration value of a keras-tuner value."""
        if self.encoded and isinstance(value, str):
            return json.loads(value)
        if self.kind == "float" and self.step is not None and isinstance(value, float):
            return float(f"{value:.12g}")  # keras-tuner's min + k * step: 0.30000000000000004 -> 0.3
        return value


def parse_space(space: dict[str, Any], task: str = "classification") -> list[Entry]:
    """Checks a declarative space for runs of ``task`` and returns its entries, in order.

    Raises:
        ValueError: an empty space, a key that is not a field of the task's configuration, or an entry that is
            not one of the forms in this module's docstring (the message says which and why).
    """
    if not isinstance(space, dict) or not space:
        raise ValueError(f"The search space is empty (received {space!r}): give at least one configuration field "
                         "to tune, e.g. {'learning_rate': {'log': [1e-4, 1e-2]}}, or use cnn_space().")
    try:
        TASKS[task].config_class.check_keys(dict(space))  # a renamed key names its new name, a typo the closest
    except ValueError as error:
        raise ValueError(f"The search space names a key that is not a configuration field. {error}") from None
    entries: dict[str, Entry] = {}
    for name, spec in space.items():
        if name in ("name", "tags", "reports_dir", "verbose"):
            raise ValueError(f"{name!r} describes where a run is recorded, not what it does; it cannot be tuned.")
        entries[name] = _parse_entry(name, spec, entries)
    return list(entries.values())


def declare(hp: keras_tuner.HyperParameters, entries: list[Entry]) -> dict[str, Any]:
    """Declares the entries in ``hp`` and returns the active ones' values, decoded for the configuration."""
    values: dict[str, Any] = {}
    for entry in entries:
        if entry.when is None:
            values[entry.name] = entry.decode(entry.declare(hp))
            continue
        parent, parent_values = entry.when
        with hp.conditional_scope(parent, list(parent_values)):
            value = entry.declare(hp)
        if hp.is_active(entry.name):
            values[entry.name] = entry.decode(value)
    return values


def space_values(values: dict[str, Any], entries: list[Entry]) -> dict[str, Any]:
    """A trial's hyperparameter values without keras-tuner's and the kit's bookkeeping, decoded."""
    by_name = {e.name: e for e in entries}
    return {k: (by_name[k].decode(v) if k in by_name else v) for k, v in values.items()
            if not k.startswith((TUNER_PREFIX, LAB_PREFIX))}


def check_against(base: BaseConfig, entries: list[Entry], check: Callable[[BaseConfig], Any] | None = None) -> None:
    """Builds a configuration for every candidate value, one entry at a time, before any trial runs.

    The other entries stay at their defaults, so a typo such as ``normalization="bn"`` or a
    learning-rate range that reaches 0 is refused now rather than after hours of trials.

    Args:
        base: the search's base configuration.
        entries: the parsed space.
        check: called with each candidate configuration (e.g. to build its model), raising
            ValueError for a value only the model builder knows to be wrong.
    """
    defaults = {e.name: e.decode(e.default) for e in entries if e.when is None}
    for entry in entries:
        candidates = [entry.decode(v) for v in entry.values] if entry.kind == "choice" else [entry.min, entry.max]
        if entry.kind == "int":
            candidates = [int(v) for v in candidates]
        extra = {}
        if entry.when is not None:  # check a conditional value with its parent switched on
            parent = next(e for e in entries if e.name == entry.when[0])
            extra = {parent.name: parent.decode(entry.when[1][0])}
        for value in candidates:
            try:
                config = base.replace(**{**defaults, **extra, entry.name: value})
                if check is not None:
                    check(config)
            except (ValueError, TypeError) as error:
                raise ValueError(f"The search space's value {entry.name}={value!r} makes an invalid configuration: "
                                 f"{error}") from error


def cnn_space(**changes: Any) -> dict[str, Any]:
    """The E1 CNN's hyperparameters: filters, depth, normalisation, dropout, L2, learning rate,
    optimizer (and SGD/RMSprop momentum, only when one of them is chosen).

    Args:
        **changes: entries to replace (any form of this module's docstring), or None to drop one.

    Example:
        >>> cnn_space(depth=[2, 3], optimizer=None)   # shallower nets, Adam only (the base's)
    """
    space: dict[str, Any] = {
        "filters": [16, 32, 64],
        "depth": [2, 3, 4],
        "normalization": ["none", "batch", "layer"],
        "dropout_rate": {"min": 0.0, "max": 0.5, "step": 0.1},
        "l2": [0.0, 1e-5, 1e-4, 1e-3],
        "learning_rate": {"log": [1e-4, 1e-2]},
        "optimizer": ["adam", "sgd", "rmsprop"],
        "momentum": {"values": [0.0, 0.9], "when": {"optimizer": ["sgd", "rmsprop"]}},
    }
    return _narrow_condition(_changed(space, changes), "momentum", "optimizer", lambda v: v in ("sgd", "rmsprop"))


def transfer_space(**changes: Any) -> dict[str, Any]:
    """A transfer model's hyperparameters (model="transfer"): backbone, how many of its last
    stages train, head width and dropout, the head's learning rate and the backbone's factor.

    Args:
        **changes: entries to replace, or None to drop one.
    """
    space: dict[str, Any] = {
        "backbone": ["mobilenetv2", "efficientnetb0", "resnet50"],
        "unfreeze": [0, 1, 2],
        "head_units": [[], [128], [256]],
        "head_dropout": {"min": 0.0, "max": 0.5, "step": 0.25},
        "learning_rate": {"log": [1e-5, 1e-3]},
        "backbone_lr_factor": {"values": [1.0, 0.1], "when": {"unfreeze": [1, 2]}},
    }
    return _narrow_condition(_changed(space, changes), "backbone_lr_factor", "unfreeze", lambda v: v != 0)


def _changed(space: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if value is None:
            space.pop(key, None)
        else:
            space[key] = value
    return space


def _narrow_condition(space: dict[str, Any], child: str, parent: str, applies: Callable[[Any], bool]) -> dict[str, Any]:
    """Keeps a ready-made conditional entry in step with its parent's values after changes:
    conditioned on those values it applies to, dropped when none (or no parent) is left."""
    entry = space.get(child)
    if not isinstance(entry, dict) or set(entry.get("when") or {}) != {parent}:
        return space  # replaced by the caller: left as given
    values = space.get(parent)
    values = values.get("values") if isinstance(values, dict) else values
    wanted = [v for v in values or [] if applies(v)] if isinstance(values, list) else []
    if wanted:
        space[child] = {**entry, "when": {parent: wanted}}
    else:
        space.pop(child)
    return space


def _parse_entry(name: str, spec: Any, previous: dict[str, Entry]) -> Entry:
    where = f"search space entry {name!r}"
    if isinstance(spec, (list, tuple)):
        return _choice(name, list(spec), None, where)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a list of values or a dict ({{'min', 'max'}}, {{'log'}}, {{'values'}}), "
                         f"received {spec!r}. A single value belongs in the base configuration, not the space.")
    unknown = sorted(set(spec) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}. Valid keys: {', '.join(sorted(_ENTRY_KEYS))}.")
    when = _parse_when(spec.get("when"), previous, where)
    if "values" in spec:
        if {"min", "max", "log", "step", "sampling"} & set(spec):
            raise ValueError(f"{where}: give either 'values' or a range ('min'/'max' or 'log'), not both.")
        entry = _choice(name, list(spec["values"]), spec.get("default"), where)
        return dataclasses.replace(entry, when=when)
    if "log" in spec:
        if {"min", "max"} & set(spec) or not isinstance(spec["log"], (list, tuple)) or len(spec["log"]) != 2:
            raise ValueError(f"{where}: 'log' takes [low, high] (e.g. [1e-4, 1e-2]), received {spec!r}.")
        low, high, sampling = spec["log"][0], spec["log"][1], "log"
    elif "min" in spec and "max" in spec:
        low, high, sampling = spec["min"], spec["max"], spec.get("sampling", "linear")
    else:
        raise ValueError(f"{where}: a dict needs 'values', 'min' and 'max', or 'log'; received {spec!r}.")
    step = spec.get("step")
    for label, value in (("min", low), ("max", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}: {label} must be a number, received {value!r}.")
    if not low < high:
        raise ValueError(f"{where}: the range must have min < max, received [{low}, {high}].")
    if sampling not in SAMPLINGS:
        raise ValueError(f"{where}: sampling must be one of {SAMPLINGS}, received {sampling!r}.")
    if sampling != "linear" and low <= 0:
        raise ValueError(f"{where}: {sampling} sampling needs a positive range, received [{low}, {high}].")
    if step is not None and step <= 0:
        raise ValueError(f"{where}: step must be positive, received {step}.")
    integer = all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
    kind = "int" if integer else "float"
    default = spec.get("default", low)
    return Entry(name, kind, min=low, max=high, step=step, sampling=sampling, default=default, when=when)


def _choice(name: str, values: list, default: Any, where: str) -> Entry:
    if not values:
        raise ValueError(f"{where}: an empty list of values; give at least one.")
    kinds = {type(v) for v in values}
    if kinds <= {int, float} and len(kinds) == 2:
        values = [float(v) for v in values]  # [0, 0.5] is one float choice, not a mixed one
        default = None if default is None else float(default)
    kinds = {type(v) for v in values}
    plain = len(kinds) == 1 and kinds <= {int, float, str, bool}
    encoded = not plain
    if encoded:
        try:
            values = [json.dumps(v) for v in values]
        except TypeError as error:
            raise ValueError(f"{where}: values must be literals (numbers, strings, lists, None), received {values!r}.") \
                from error
        default = None if default is None else json.dumps(default)
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: repeated values in {values!r}.")
    default = values[0] if default is None else default
    if default not in values:
        raise ValueError(f"{where}: the default {default!r} is not one of the values {values!r}.")
    return Entry(name, "choice", values=tuple(values), encoded=encoded, default=default)


def _parse_when(when: Any, previous: dict[str, Entry], where: str) -> tuple[str, tuple] | None:
    if when is None:
        return None
    if not isinstance(when, dict) or len(when) != 1:
        raise ValueError(f"{where}: 'when' takes one parent, e.g. {{'optimizer': ['sgd']}}, received {when!r}.")
    (parent, wanted), = when.items()
    if parent not in previous or previous[parent].kind != "choice":
        raise ValueError(f"{where}: 'when' refers to {parent!r}, which must be a list (Choice) entry earlier in "
                         f"the space. Earlier entries: {', '.join(previous) or 'none'}.")
    wanted = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
    entry = previous[parent]
    held = [json.dumps(v) if entry.encoded else (float(v) if isinstance(entry.values[0], float) else v)
            for v in wanted]
    missing = [w for w, h in zip(wanted, held) if h not in entry.values]
    if missing:
        raise ValueError(f"{where}: 'when' values {missing} are not among {parent!r}'s values.")
    return parent, tuple(held)
