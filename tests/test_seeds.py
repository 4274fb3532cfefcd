import argparse

import pytest

from lab.studies.seeds import parse_argument, per_seed, seed_list


def test_a_count_starts_at_the_base_seed_and_a_list_is_kept():
    assert seed_list(None) == [0] and seed_list(None, base_seed=7) == [7]
    assert seed_list(3) == [0, 1, 2] and seed_list(3, base_seed=5) == [5, 6, 7]
    assert seed_list([4, 0, 9]) == [4, 0, 9] and seed_list((2,), base_seed=8) == [2]
    assert seed_list("3") == [0, 1, 2] and seed_list("0, 4,9") == [0, 4, 9]


@pytest.mark.parametrize("seeds, message", [
    (0, "at least 1; received seeds=0"),
    (-2, "at least 1; received seeds=-2"),
    (True, "received seeds=True"),
    ([], "non-empty list"),
    ([0, -1], r"not seeds: \[-1\]"),
    ([0, 1.5], r"not seeds: \[1.5\]"),
    ([1, 1, 2], r"\[1\] repeated"),
    ("three", "received 'three'"),
    ("5,", "received '5,'"),
    ({"a": 1}, "received seeds={'a': 1}"),
])
def test_bad_seeds_say_what_was_received(seeds, message):
    with pytest.raises(ValueError, match=message):
        seed_list(seeds)


def test_each_configuration_runs_once_per_seed_in_order():
    configurations = [{"name": "a", "lr": 1}, {"name": "b", "seed": 10}]
    assert per_seed(configurations, None) == configurations
    assert per_seed(configurations, 2, base_seed=3) == [
        {"name": "a", "lr": 1, "seed": 3}, {"name": "a", "lr": 1, "seed": 4},
        {"name": "b", "seed": 10}, {"name": "b", "seed": 11}]
    assert [c["seed"] for c in per_seed(configurations, [7])] == [7, 7]


def test_the_command_line_takes_a_count_or_a_list():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=parse_argument)
    assert parser.parse_args(["--seeds", "3"]).seeds == 3
    assert parser.parse_args(["--seeds", "0,1,2"]).seeds == [0, 1, 2]
    with pytest.raises(argparse.ArgumentTypeError, match="received 'x'"):
        parse_argument("x")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        parse_argument("0")
