"""Fuzzing the config layer: any settings JSON or flag list gives a valid config or a clean ConfigError."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brevetti_pipe import ConfigError, Job
from brevetti_pipe.cli import translate_argv
from brevetti_pipe.config import compose
from brevetti_pipe.platform import resolve_config

KEYS = ["settings", "datasets", "split", "sampler", "pipeline", "data", "epochs", "batch_size", "image", "augment",
        "onehot", "fractions", "train", "devel", "test", "url", "classes", "target_size", "rescale", "groupby",
        "weighting", "type", "on_bad_sample", "random_transformer", "chance", "x", "", "_target_"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["unit", "uniform", "good", "imagenet", "[1,2]", "${oops}", "${settings.epochs}", "memory://x"]),
                    st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                           max_leaves=12)
documents = st.dictionaries(st.sampled_from(KEYS[:6] + ["api_key", "nope"]), json_values, max_size=4)

FLAGS = ["--epochs", "--batch_size", "--job_id", "--api_key", "--image.size", "--learning_rate", "--job.seed",
         "--split.fractions", "--pipeline.image.target_size", "--x.y", "--datasets"]
flag_values = st.one_of(st.sampled_from(["1", "0", "-3", "abc", "[1,2]", '{"a": 1}', "{a:1}", "null", "1e400", "''", "=", "${x}",
                                         '{"train": 0.5, "devel": 0.5}', "[32, 32]"]), st.text(max_size=6))
argvs = st.lists(st.one_of(st.tuples(st.sampled_from(FLAGS), flag_values).map(list),
                           st.sampled_from([["settings.epochs=2"], ["~pipeline.augment"], ["+settings.z=1"], ["datasets=none"],
                                            ["split=sample_split"], ["recipe=vials_segmentation"], ["job.seed=-1"]])),
                 max_size=5).map(lambda parts: [a for p in parts for a in p])

common = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@common
@given(doc=documents)
def test_random_settings_json(tmp_path_factory, doc):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "s.json"
    try:
        path.write_text(json.dumps(doc, allow_nan=True))
    except ValueError:
        return
    try:
        Job.init(overrides=["recipe=vials_classification", f"platform.root={folder}", f"job.settings_json={path}"])
    except ConfigError as exc:
        assert str(exc) and "Traceback" not in str(exc)


@common
@given(argv=argvs)
def test_random_command_lines(tmp_path_factory, argv):
    folder = tmp_path_factory.mktemp("fuzz")
    try:
        overrides, _ = translate_argv(argv)
        cfg, task, groups = compose(["recipe=vials_classification", f"platform.root={folder}", *overrides])
        Job.from_config(resolve_config(cfg, task, groups))
    except ConfigError as exc:
        assert str(exc) and "Traceback" not in str(exc)
