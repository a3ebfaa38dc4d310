"""The label convention that the training data is mapped onto (docs/labels.md)."""

import pytest

from titlecat.labels import TASKS, harmonise_department, harmonise_seniority


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


@pytest.mark.parametrize(
    "title",
    [
        "Owner",
        "Co-Owner",
        "Unternehmensinhaber",
        "CEO & Founder",
        "Geschäftsführender Gesellschafter",
        "Selbstständiger Unternehmer",
        "Stellv. Geschäftsführer",
        "Sr. Vice President",
        "Gérante",
        "CEO/Founder",
    ],
)
def test_general_management_alone_is_other(title):
    # The annotators file a title that only says someone runs a business under Other (all 21 in cv-dev).
    assert harmonise_department(title, "Business Development") == "Other"
    assert TASKS["department"].training_label(title, "Business Development") == "Other"


@pytest.mark.parametrize(
    ("title", "label"),
    [
        # A function in the title keeps the label: it says which department.
        ("Geschäftsführer Vertrieb", "Sales"),
        ("Vice President Marketing", "Marketing"),
        ("Founder & Business Developer", "Business Development"),
        # A company name is more than general management; partners and owner-like words are not guessed.
        ("Geschäftsführer, Muster GmbH", "Business Development"),
        ("Managing Partner", "Consulting"),
        ("Product Owner", "Information Technology"),
        ("Ownership Manager", "Business Development"),
        ("Sales Manager", "Marketing"),
    ],
)
def test_other_department_labels_are_kept_as_given(title, label):
    assert harmonise_department(title, label) == label
