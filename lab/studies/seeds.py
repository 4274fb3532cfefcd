"""Repeated seeds: the one place that turns a ``seeds`` setting into seeds and per-seed configurations.

Every group of runs (a sweep, a batch, the E1 ablation, a search's final retraining, the
transfer studies) takes the same ``seeds`` setting, and each configuration runs once per seed:

    None        one run per configuration, with the configuration's own ``seed``
    3           a count: the seeds base, base + 1, base + 2, where base is the configuration's
                ``seed`` (0 unless set), so ``--seed 5 --seeds 3`` runs seeds 5, 6 and 7
    [0, 4, 9]   a list: exactly these seeds (non-negative, distinct)
    "3", "0,4,9"  the same, as a command line writes them (``--seeds 3``, ``--seeds 0,4,9``)

A count starts at the base seed so that ``seeds=1`` is the run the configuration names, and the
first seed of a repeated group is the run made without ``seeds``: what ran before is reused.

A per-seed run keeps its configuration's name (the seed is in its ``seed`` field), so the runs of
one configuration are told apart by seed and grouped by everything else; a collection record's
members carry both (``lab.runs.collection``: ``configuration`` and ``seed``).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

def seed_list(seeds: int | str | Sequence[int] | None, *, base_seed: int = 0) -> list[int]:
    """The seeds a ``seeds`` setting names (see the module docstring).

    Args:
        seeds: None, a count, a list of seeds, or their text (``"3"``, ``"0,1,2"``).
        base_seed: the first seed of a count (the configuration's ``seed``).

    Returns:
        The seeds, in order; ``[base_seed]`` for None.

    Raises:
        ValueError: a count below 1, a negative, repeated or non-integer seed, an empty list, or
            text that is neither a count nor a comma-separated list (the message quotes it).
    """
    if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
        raise ValueError(f"The base seed must be a non-negative integer; received base_seed={base_seed!r}.")
    if seeds is None:
        return [base_seed]
    if isinstance(seeds, str):
        return seed_list(_parse(seeds), base_seed=base_seed)
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of seeds; received seeds={seeds!r}.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"A count of seeds must be at least 1; received seeds={seeds!r}.")
        return [base_seed + i for i in range(seeds)]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ValueError(f"seeds must be a count (3) or a non-empty list of seeds ([0, 1, 2]); "
                         f"received seeds={seeds!r}.")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"Every seed must be a non-negative integer; received seeds={list(seeds)!r} "
                         f"(not seeds: {bad!r}).")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ValueError(f"Each seed may appear once; received seeds={list(seeds)!r} ({repeated} repeated).")
    return list(seeds)


def per_seed(configurations: Iterable[dict[str, Any]], seeds: int | str | Sequence[int] | None, *,
             base_seed: int = 0) -> list[dict[str, Any]]:
    """Each configuration once per seed, in order: all seeds of the first, then the second...

    Args:
        configurations: flat configurations (a sweep's variants, a batch's parameter sets).
        seeds: the ``seeds`` setting; None leaves the configurations as they are.
        base_seed: the first seed of a count, where a configuration sets no ``seed`` of its own.

    Returns:
        The configurations, each with its ``seed`` set (unchanged for ``seeds=None``).

    Raises:
        ValueError: a bad ``seeds`` (``seed_list``).
    """
    configurations = [dict(c) for c in configurations]
    if seeds is None:
        return configurations
    return [{**c, "seed": s} for c in configurations for s in seed_list(seeds, base_seed=c.get("seed", base_seed))]


def parse_argument(text: str) -> int | list[int]:
    """``argparse``'s type for ``--seeds``: a count (``3``) or a list (``0,1,2``), validated.

    Raises:
        argparse.ArgumentTypeError: anything else, with what was received.
    """
    import argparse

    try:
        value = _parse(text)
        seed_list(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def _parse(text: str) -> int | list[int]:
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"seeds must be a count (3) or comma-separated seeds (0,1,2); received {text!r}.") from None
    return numbers[0] if "," not in text else numbers
