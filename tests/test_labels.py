"""The label convention that the training data is mapped onto (docs/labels.md)."""

import pytest

from titlecat.labels import TASKS, harmonise_seniority


@pytest.mark.parametrize(
    ("title", "label", "expected"),
    [
        # The curated CSV's Senior without a seniority word is the annotators' Professional.
        ("Sales Manager EMEA", "Senior", "Professional"),
        ("Salesforce Consultant", "Senior", "Professional"),
        ("Senior Business Consultant", "Senior", "Senior"),
        ("Sr. Application Engineer", "Senior", "Senior"),
        ("Principal Architect", "Senior", "Senior"),
        # Junior only for people in training or titled junior.
        ("Referent Marketing", "Junior", "Professional"),
        ("Industriereiniger", "Junior", "Professional"),
        ("Werkstudent Facheinkauf Interieur", "Junior", "Junior"),
        ("Auszubildender zum Zerspanungsmechaniker", "Junior", "Junior"),
        ("IT Intern", "Junior", "Junior"),
        ("Junior Web Developer", "Junior", "Junior"),
        # The other labels are never touched, whatever the title says.
        ("Senior Vice President Sales", "Management", "Management"),
        ("Teamleiter Junior Sales", "Lead", "Lead"),
        ("Sales Manager", "Professional", "Professional"),
    ],
)
def test_seniority_labels_follow_the_annotators_convention(title, label, expected):
    assert harmonise_seniority(title, label) == expected
    assert TASKS["seniority"].training_label(title, label) == expected


def test_markers_are_words_not_substrings():
    # "Seniorenheim" (care home) is no seniority word; "Internal" is no intern.
    assert harmonise_seniority("Pflegekraft Seniorenheim", "Senior") == "Professional"
    assert harmonise_seniority("Internal Auditor", "Junior") == "Professional"


def test_department_labels_are_kept_as_given():
    assert TASKS["department"].training_label("Sales Manager", "Marketing") == "Marketing"
