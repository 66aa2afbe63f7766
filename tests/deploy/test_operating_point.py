"""The operating point: the threshold on P(accept class) chosen on devel, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from brevetti_pipe.errors import ConfigError
from brevetti_pipe.run.operating_point import (
    OperatingPoint, accept_index, choose_operating_point, decisions, rates, tradeoff_curve,
)

CLASSES = ["good", "crack", "chip"]
# devel: P(good) of 5 good and 4 defective samples; 0.6 is shared by two good and one defective sample
GOOD = [0.9, 0.8, 0.6, 0.6, 0.3]
BAD = [0.7, 0.6, 0.2, 0.1]


def _devel() -> tuple[np.ndarray, np.ndarray]:
    """The scores as a probability matrix's accept column, true classes mixed in a shuffled order."""
    scores = np.array(GOOD + BAD)
    y_true = np.array([0] * 5 + [1, 2, 1, 2])
    order = np.random.default_rng(3).permutation(len(scores))
    probs = np.zeros((len(scores), 3))
    probs[:, 0] = scores[order]
    probs[:, 1] = 1 - scores[order]
    return probs, y_true[order]


def test_threshold_and_rates_equal_the_hand_computation():
    probs, y_true = _devel()
    column = accept_index(CLASSES, "good")
    scores, is_good = probs[:, column], y_true == column
    # by hand, accepting P(good) >= t: escapes (defective accepted) / 4 and false rejects (good rejected) / 5
    #   t=0.1: 4/4, 0/5   t=0.2: 3/4, 0/5   t=0.3: 2/4, 0/5   t=0.6: 2/4 (the tie at 0.6 escapes), 1/5
    #   t=0.7: 1/4, 3/5   t=0.8: 0/4, 3/5   t=0.9: 0/4, 4/5   above 0.9: 0/4, 5/5
    expected = [(0.1, 1.0, 0.0), (0.2, 0.75, 0.0), (0.3, 0.5, 0.0), (0.6, 0.5, 0.2), (0.7, 0.25, 0.6),
                (0.8, 0.0, 0.6), (0.9, 0.0, 0.8)]
    curve = tradeoff_curve(scores, is_good)
    assert [(p.threshold, p.escape_rate, p.false_reject_rate) for p in curve[:-1]] == expected
    assert curve[-1].threshold > 0.9 and (curve[-1].escape_rate, curve[-1].false_reject_rate) == (0.0, 1.0)

    # at most 1 of 4 defective accepted: 0.7 is the lowest threshold allowed (0.6 lets the tie through)
    assert choose_operating_point(scores, is_good, 0.25) == OperatingPoint(0.7, 0.25, 0.6)
    assert choose_operating_point(scores, is_good, 0.3) == OperatingPoint(0.7, 0.25, 0.6)
    # no escapes at all: 0.8 (0.9 would reject one more good sample for nothing)
    assert choose_operating_point(scores, is_good, 0.0) == OperatingPoint(0.8, 0.0, 0.6)
    assert choose_operating_point(scores, is_good, 0.5) == OperatingPoint(0.3, 0.5, 0.0)
    assert choose_operating_point(scores, is_good, 1.0) == OperatingPoint(0.1, 1.0, 0.0)

    # test set at the chosen 0.7: good 0.95 accepted, 0.5 rejected; defective 0.75 escapes, 0.1 does not
    assert rates([0.95, 0.5, 0.75, 0.1], [True, True, False, False], 0.7) == OperatingPoint(0.7, 0.5, 0.5)
    # a score equal to the threshold is accepted, by rates and by the decisions predict writes
    assert decisions([0.7, 0.69999, 0.95], 0.7) == ["accept", "reject", "accept"]
    assert rates([0.7], [False], 0.7).escape_rate == 1.0


def test_no_defective_samples_accepts_everything_and_leaves_the_escape_rate_undefined():
    point = choose_operating_point([0.4, 0.9, 0.4], [True, True, True], 0.01)
    assert point == OperatingPoint(0.4, None, 0.0)
    assert rates([0.1, 0.2], [False, False], 0.15) == OperatingPoint(0.15, 0.5, None)


def test_accept_class_not_among_the_classes_names_the_key():
    with pytest.raises(ConfigError) as info:
        accept_index(CLASSES, "godo")
    message = str(info.value)
    assert "evaluation.operating_point.accept_class" in message and "'godo'" in message
    assert "['good', 'crack', 'chip']" in message and "Did you mean 'good'?" in message
    with pytest.raises(ConfigError, match="max_escape_rate"):
        choose_operating_point([0.5], [True], 1.5)
