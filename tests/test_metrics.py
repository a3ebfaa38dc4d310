import numpy as np
import pytest

from titlecat.labels import TASKS
from titlecat.metrics import (
    bootstrap_intervals,
    classification_metrics,
    paired_difference_intervals,
    seen_unseen_metrics,
)


def test_metrics_on_a_hand_checked_example():
    gold = ["Junior", "Junior", "Senior", "Lead", "Director", "Lead"]
    predicted = ["Junior", "Senior", "Senior", "Lead", "Management", "Senior"]
    m = classification_metrics(gold, predicted, TASKS["seniority"])
    assert m["accuracy"] == pytest.approx(3 / 6)
    # Labels in gold or predicted: Junior, Senior, Lead, Director, Management.
    # F1: Junior 2/3 (P 1, R 1/2), Senior 1/2 (P 1/3, R 1), Lead 2/3 (P 1, R 1/2), Director 0, Management 0.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 5)
    # |1-1| + |1-3| + 0 + 0 + |6-5| + |4-3| = 4 over 6
    assert m["mae"] == pytest.approx(4 / 6)
    assert m["per_class"]["Senior"] == {"precision": pytest.approx(1 / 3), "recall": 1.0, "f1": 0.5, "support": 1}
    assert m["per_class"]["Professional"]["support"] == 0
    labels = m["labels"]
    assert m["confusion"][labels.index("Lead")][labels.index("Senior")] == 1
    assert sum(map(sum, m["confusion"])) == 6


def test_department_has_no_mae_and_length_mismatch_is_an_error():
    m = classification_metrics(["Sales", "Other"], ["Sales", "Sales"], TASKS["department"])
    assert "mae" not in m and m["accuracy"] == 0.5
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        classification_metrics(["Sales", "Other"], ["Sales"], TASKS["department"])


def test_seen_unseen_split_and_bootstrap_intervals():
    task = TASKS["department"]
    texts = ["CEO", "Sales Manager", "IT-Leiter", "Einkäufer"]
    gold = ["Other", "Sales", "Information Technology", "Purchasing"]
    predicted = ["Other", "Sales", "Sales", "Purchasing"]
    split = seen_unseen_metrics(gold, predicted, texts, {"ceo", "it-leiter"}, task)
    assert split["seen_in_train"]["n"] == 2 and split["seen_in_train"]["accuracy"] == 0.5
    assert split["unseen_in_train"] == {"n": 2, "accuracy": 1.0, "macro_f1": 1.0}
    intervals = bootstrap_intervals(gold * 25, predicted * 25, task, resamples=200)
    low, high = intervals["accuracy"]
    assert 0.6 < low < 0.75 < high < 0.9  # around the point estimate 0.75
    assert intervals == bootstrap_intervals(gold * 25, predicted * 25, task, resamples=200)  # seeded


def test_resampled_macro_f1_is_scikit_learns_on_every_resample():
    from conftest import curated_examples
    from sklearn.metrics import f1_score

    from titlecat.metrics import resampled_indices, resampled_macro_f1

    gold = [example.label for example in curated_examples("department", 150, seed=3)]
    labels = sorted(set(gold))
    # Wrong on every third title, and a label no gold title has on every eleventh: labels absent from a resample's
    # gold or from its predictions both occur.
    predicted = [
        "Unheard-of" if i % 11 == 0 else labels[(labels.index(g) + 1) % len(labels)] if i % 3 == 0 else g
        for i, g in enumerate(gold)
    ]
    indices = np.array(list(resampled_indices(len(gold), 300, seed=1)))
    expected = [
        f1_score(np.array(gold)[row], np.array(predicted)[row], average="macro", zero_division=0) for row in indices
    ]
    assert np.allclose(resampled_macro_f1(gold, predicted, indices), expected, rtol=0, atol=1e-12)
    task = TASKS["department"]
    assert bootstrap_intervals(gold, predicted, task, resamples=300, seed=1)["macro_f1"] == pytest.approx(
        (np.percentile(expected, 2.5), np.percentile(expected, 97.5)), abs=1e-12
    )


def test_paired_differences_are_zero_for_the_same_answers_and_certain_for_a_strictly_better_pipeline():
    from conftest import curated_examples

    gold = [example.label for example in curated_examples("department", 200, seed=7)]
    labels = sorted(set(gold))
    # A is wrong on every fourth title, B on every eighth of those: B is right wherever A is, and on more.
    a = [labels[(labels.index(g) + 1) % len(labels)] if i % 4 == 0 else g for i, g in enumerate(gold)]
    b = [wrong if i % 8 == 0 else g for i, (g, wrong) in enumerate(zip(gold, a, strict=True))]
    same = paired_difference_intervals(gold, a, a, resamples=200)
    assert same["accuracy"] == same["macro_f1"] == {"difference": 0.0, "interval": (0.0, 0.0), "b_ahead": 0.0}
    better = paired_difference_intervals(gold, a, b, resamples=200)
    assert better["accuracy"]["difference"] == pytest.approx(25 / 200)
    assert better["accuracy"]["interval"][0] > 0 and better["accuracy"]["b_ahead"] == 1.0
    assert better["macro_f1"]["difference"] > 0 and better["macro_f1"]["interval"][0] > 0
    # swapped: the same figures with the sign turned
    worse = paired_difference_intervals(gold, b, a, resamples=200)
    assert worse["accuracy"]["difference"] == pytest.approx(-25 / 200) and worse["accuracy"]["b_ahead"] == 0.0
    with pytest.raises(ValueError, match="200 gold labels, 200 and 199 predictions"):
        paired_difference_intervals(gold, a, b[:-1])
