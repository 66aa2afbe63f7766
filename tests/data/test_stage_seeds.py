"""A stage's random draws are keyed by its name in ``pipeline.<name>``, not by its position in the chain."""

from __future__ import annotations

import numpy as np

from brevetti_pipe.config import JobConfig
from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.data._generator import stage_seed_ids
from brevetti_pipe.data.pipeline import build_stages
from brevetti_pipe.stages import ImageAugmenter, ImagePipeline, ImageNoise, RandomTransformer, Stage


class _Tag(Stage):
    """A deterministic stage that adds a key (stands for any stage added to the chain)."""

    def __call__(self, x, seed=None):
        return {**x, "tag": x["path"]}


def _keyed(stage: Stage, key: str) -> Stage:
    stage.key = key
    return stage


def _augmented(samples, *extra_before: Stage, augment_key: str = "augment") -> list[np.ndarray]:
    augmenter = ImageAugmenter(random_transformer=RandomTransformer(rotate=30, rotate_chance=0.7, flip_left_right=True),
                               image_noise=ImageNoise(stddev=0.05))
    stages = [_keyed(ImagePipeline(target_size=(24, 24), rescale="unit"), "image"), *extra_before,
              _keyed(augmenter, augment_key)]
    gen = DataGenerator(samples, batch_size=4, shuffle=True, repeat=True, seed=3, output_structure="img", stages=stages)
    it = gen.get_dataset_numpy()
    return [next(it) for _ in range(2 * len(gen))]  # two epochs


def test_adding_or_removing_a_stage_before_the_augmenter_keeps_its_draws(tiny_vials):
    samples = get_image_samples(tiny_vials)
    base = _augmented(samples)
    added = _augmented(samples, _keyed(_Tag(), "tag"))
    two_added = _augmented(samples, _keyed(_Tag(), "tag"), _keyed(_Tag(), "tag_again"))
    for a, b, c in zip(base, added, two_added):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    renamed = _augmented(samples, augment_key="augment_2")
    assert any(not np.array_equal(a, b) for a, b in zip(base, renamed)), "the name keys the draws"


def test_stage_keys_come_from_the_pipeline_names():
    config = JobConfig.model_validate({
        "job": {"id": "seeds"},
        "platform": {"root": "."},
        "pipeline": {
            "image": {"type": "image_pipeline", "target_size": [8, 8]},
            "augment": {"type": "image_augmenter"},
        },
    })
    stages = build_stages(config)
    assert [s.key for s in stages] == ["image", "augment"]
    reordered = stage_seed_ids(list(reversed(stages)))
    assert reordered == list(reversed(stage_seed_ids(stages))), "a stage's seed does not depend on its position"


def test_unnamed_stages_are_keyed_by_type_and_repeats_stay_distinct():
    ids = stage_seed_ids([_Tag(), _Tag(), ImageAugmenter()])
    assert len(set(ids)) == 3
    assert stage_seed_ids([ImageAugmenter()]) == stage_seed_ids([_Tag(), ImageAugmenter()])[1:]
