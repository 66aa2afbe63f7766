"""StratifiedSampler: seeded draws whose group frequencies converge to the weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brevetti_pipe.data import DataGenerator, StratifiedSampler
from brevetti_pipe.errors import ConfigError


def _samples(sizes: dict[str, int]) -> pd.DataFrame:
    rows = [{"path": f"/{g}/{i}", "category": (g,), "etag": f"{g}{i}"} for g, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows)


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 40), min_size=2, max_size=4),
    weighting=st.sampled_from(["uniform", "explicit"]),
    seed=st.integers(0, 10_000),
)
def test_group_frequencies_converge_to_weights(sizes, weighting, seed):
    samples = _samples(sizes)
    groups = sorted(sizes)
    if weighting == "explicit":
        weights = {g: float(i + 1) for i, g in enumerate(groups)}
        expected = {g: w / sum(weights.values()) for g, w in weights.items()}
        sampler = StratifiedSampler(["category"], weights)
    else:
        expected = {g: 1 / len(groups) for g in groups}
        sampler = StratifiedSampler(["category"], "uniform")
    draws = 4000
    gen = sampler.get(samples, batch_size=None, seed=seed, epoch_size=draws, output_structure="category")
    counts = Counter(gen.get_samples_numpy("__default__"))
    for g in groups:
        assert abs(counts[g] / draws - expected[g]) < 0.035, (g, counts, expected)


def test_count_weighting_draws_every_sample_once_per_epoch_in_a_seeded_order():
    samples = _samples({"a": 5, "b": 3})
    gen = StratifiedSampler(["category"], "count").get(samples, batch_size=None, seed=3, output_structure="etag")
    first = list(gen.get_samples_numpy("__default__"))
    assert sorted(first) == sorted(samples.etag)
    assert first == list(gen.get_samples_numpy("__default__"))
    other = list(StratifiedSampler(["category"]).get(samples, batch_size=None, seed=4, output_structure="etag").get_samples_numpy("__default__"))
    assert first != other


def test_unknown_group_and_column_are_config_errors():
    samples = _samples({"a": 2})
    with pytest.raises(ConfigError, match="not in the data"):
        StratifiedSampler(["category"], {"b": 1.0}).weights(samples)
    with pytest.raises(ConfigError, match="Did you mean 'category'"):
        StratifiedSampler(["categry"], "uniform").weights(samples)
    with pytest.raises(ConfigError, match="Did you mean 'uniform'"):
        StratifiedSampler(["category"], "unifrom")


def test_each_epoch_reshuffles_when_repeating():
    samples = _samples({"a": 20})
    gen = DataGenerator(samples, batch_size=20, shuffle=True, repeat=True, seed=0, output_structure="etag")
    it = gen.get_samples_numpy("__default__")
    e1, e2 = next(it), next(it)
    assert sorted(e1) == sorted(e2) and list(e1) != list(e2)
    assert np.array_equal(e1, next(DataGenerator(samples, batch_size=20, shuffle=True, seed=0, output_structure="etag").get_samples_numpy("__default__")))
