"""Category values have one text label everywhere a category becomes text."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from brevetti_pipe._util.category import category_label


@pytest.mark.parametrize("value, label", [
    (("good",), "good"), (("defect", "scratch"), "defect/scratch"), ((), ""), (None, ""),
    (math.nan, ""), ("plain", "plain"), (("lot", 7), "lot/7"),
])
def test_category_label(value, label):
    assert category_label(value) == label


def test_graph_sampler_split_file_pivot_and_classes_agree(tmp_path):
    from brevetti_pipe.data import DataGenerator, SampleSplit
    from brevetti_pipe.data._sampler import group_labels
    from brevetti_pipe.reporting import pivot_counts
    from brevetti_pipe.stages import OneHotEncoder

    categories = [("good",), ("defect", "scratch"), (), None, math.nan, "plain"]
    samples = pd.DataFrame({"etag": [f"e{i}" for i in range(len(categories))], "path": [f"/x/{i}.png" for i in range(len(categories))],
                            "category": categories})
    expected = [category_label(c) for c in categories]
    assert expected == ["good", "defect/scratch", "", "", "", "plain"]

    graph = [e["category"] for e in DataGenerator(samples, batch_size=None).get_samples_numpy()]
    assert graph == expected
    assert group_labels(samples, ["category"]).tolist() == expected
    split = SampleSplit(seed=1).update_unassigned(samples, id_path=str(tmp_path / "sample_identification.csv"))
    written = pd.read_csv(tmp_path / "sample_identification.csv", keep_default_na=False).set_index("etag")
    assert written.loc[samples["etag"], "category"].tolist() == expected
    counts = pivot_counts(split, rows=["category"], cols=["purpose"])
    assert sorted(counts.index) == sorted(set(expected)) and int(counts.loc[""].sum()) == 3
    # OneHotEncoder finds the class of every sample by the same label, before the graph runs
    encoded = OneHotEncoder(sorted(set(expected))).prepare(samples, str(tmp_path))
    assert [sorted(set(expected))[i] for i in encoded["_class_index_category"]] == expected
