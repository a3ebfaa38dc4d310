"""ESCO names as training examples: the label rule of docs/labels.md, the Dutch dev set kept out, caps, weights."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import spacy
from conftest import REPO
from spacy.tokens import DocBin

from titlecat.components import fit_linear_by_logistic_regression
from titlecat.corpus import (
    LANG_KEY,
    WEIGHT_KEY,
    create_class_balanced_corpus,
    read_docbin,
    read_user_data,
    to_docbin,
    user_data_path,
    write_corpus,
)
from titlecat.esco import read_esco_dev
from titlecat.esco_names import (
    DEPARTMENT_COMPOSED_WORDS,
    department_of,
    draw,
    dutch_dev_uris,
    english_names,
    read_esco_source,
    seniority_of,
    split_gendered,
)
from titlecat.labels import TASKS
from titlecat.readers import DataError, Example, read_multilingual_dev


@pytest.fixture(scope="module")
def esco_files(data_dir) -> dict[str, Path]:
    esco, melo = data_dir.parent / "esco", data_dir.parent / "melo"
    return {"melo": melo, "occupations": esco / "occupations_en.csv", "dutch_dev": esco / "occupations_nl.csv"}


@pytest.fixture(scope="module")
def source(esco_files):
    """Four languages' names: enough to see the rule, quick to read."""
    return read_esco_source(esco_files["melo"], esco_files["occupations"], esco_files["dutch_dev"], 42,
                            ("de", "fr", "nl", "pl"))  # fmt: skip


@pytest.mark.parametrize(
    ("group", "english", "department"),
    [
        ("2512", "software developer", "Information Technology"),  # the Dutch dev set's table
        ("2142", "civil engineer", "Information Technology"),  # engineering: the annotators' IT
        ("1221", "sales manager", "Sales"),  # a group that splits, by the English name
        ("1221", "marketing manager", "Marketing"),
        ("1221", "commercial director", None),  # neither: left out
        ("1324", "purchasing manager", "Purchasing"),
        ("1324", "supply chain manager", "Other"),
        ("2421", "management consultant", "Consulting"),
        ("1219", "ICT project manager", "Project Management"),  # the override before the group
        ("1120", "chief executive officer", "Other"),  # general management alone
        ("1213", "policy manager", None),  # a group the rule leaves out
        ("4211", "bank teller", "Customer Support"),
    ],
)
def test_department_by_isco_group_then_name(group, english, department):
    assert department_of(group, english) == department


@pytest.mark.parametrize(
    ("name", "lang", "group", "seniority"),
    [
        ("Responsable des achats", "fr", "1324", "Lead"),
        ("Jefe de ventas", "es", "1221", "Lead"),
        ("Hoofd inkoop", "nl", "1324", "Lead"),
        ("Kierownik działu sprzedaży", "pl", "1221", "Lead"),
        ("responsabile acquisti", "it", "1324", "Lead"),
        ("Vertriebsleiterin", "de", "1221", "Lead"),
        ("Stagiaire comptable", "fr", "4311", "Junior"),
        ("Pasante de ventas", "es", "3322", "Junior"),
        ("assistente sociale", "it", "2635", "Professional"),  # a social worker, not an assistant
        ("directeur général", "fr", "1120", "Management"),
        ("Geschäftsführerin", "de", "1120", "Management"),
        ("Bürgermeister", "de", "1111", "Management"),  # ISCO 11 without a level word
        ("directeur commercial", "fr", "1221", "Director"),
        ("dyrektor finansowy", "pl", "1211", "Director"),
        ("szef kuchni", "pl", "3434", "Professional"),  # a culinary chef
        ("chef de cuisine", "fr", "3434", "Professional"),
        ("directeur de la photographie", "fr", "2654", None),  # an art's director: no rank
        ("główny księgowy", "pl", "2411", "Senior"),
        ("Verkäufer", "de", "5223", "Professional"),
        ("Marketing Manager", "en", "1221", "Professional"),  # manager alone is no rank
        ("assistente di direzione", "it", "3343", "Junior"),
    ],
)
def test_seniority_by_each_languages_level_words(name, lang, group, seniority):
    assert seniority_of(name, lang, group) == seniority


def test_gendered_pairs_split_into_their_forms():
    assert split_gendered("Verkäufer/Verkäuferin") == ["Verkäufer", "Verkäuferin"]
    assert split_gendered("vendeur/vendeuse") == ["vendeur", "vendeuse"]
    assert split_gendered("Verkäufer/in") == ["Verkäufer/in"]  # as written
    assert split_gendered("HR/Payroll Specialist") == ["HR/Payroll Specialist"]  # not a pair of forms


def test_no_name_of_a_dutch_dev_concept_in_any_language(source, esco_files):
    uris, titles = dutch_dev_uris(esco_files["dutch_dev"], 42)
    dev, _ = read_esco_dev(esco_files["dutch_dev"], 42)
    assert len(titles) == len({example.text.casefold() for example in dev}) and len(uris) > 150
    assert source.left_out["a Dutch dev concept"] > 0
    assert not {name.uri for name in source.names} & uris
    assert not {name.text.casefold() for name in source.names} & titles
    assert {name.lang for name in source.names} == {"de", "fr", "nl", "pl"}


def test_draw_caps_each_language_and_label_and_is_seeded(source, esco_files):
    english = english_names(esco_files["occupations"])
    for task in TASKS.values():
        chosen, report = draw(source, task, english, 30, 0.5, 42)
        counts = Counter((name.lang, label) for name, label in chosen)
        assert max(counts.values()) <= 30 + (15 if task.name == "department" else 0)  # department: composed on top
        assert max(Counter((n.lang, label) for n, label in chosen if not n.composed).values()) <= 30
        assert {label for _, label in chosen} <= set(task.labels)
        assert report["names"] == len(chosen) == sum(report["per_label"].values())
        assert report["left_out"]["over the cap of its language and label"] > 0
        assert draw(source, task, english, 30, 0.5, 42)[0] == chosen
        assert draw(source, task, english, 30, 0.5, 7)[0] != chosen
    seniority, report = draw(source, TASKS["seniority"], english, 30, 0.5, 42)
    composed = [(name, label) for name, label in seniority if name.composed]
    # Composed names fill Junior and Senior where ESCO's own fall short, a level word before a Professional name.
    assert report["composed"] == len(composed) > 0
    assert {label for _, label in composed} <= {"Junior", "Senior"}
    assert all(seniority_of(name.text, name.lang, name.isco_group) == label for name, label in composed)
    assert draw(source, TASKS["department"], english, 30, 0.0, 42)[1]["composed"] == 0
    department, report = draw(source, TASKS["department"], english, 30, 0.5, 42, "narrow")
    composed = [(name, label) for name, label in department if name.composed]
    # Department's composed names: a level word before a name of the same department and language, its label kept.
    plain = {(name.lang, name.uri): label for name, label in department if not name.composed}
    assert report["composed"] == len(composed) > 0
    assert max(Counter((n.lang, label) for n, label in composed).values()) <= 15
    assert all(plain.get((name.lang, name.uri), label) == label for name, label in composed)
    for name, _ in composed:  # the source's languages (de, fr, nl, pl) each have their own words
        assert any(name.text.startswith(f"{word} ") for word in DEPARTMENT_COMPOSED_WORDS[name.lang]), name.text


def test_a_melo_file_with_a_broken_line_is_named(tmp_path, esco_files):
    melo = tmp_path / "melo" / "deu_q_de_c_de"
    melo.mkdir(parents=True)
    (melo / "concept_mapping.tsv").write_text("C1_de_000\thttp://data.europa.eu/esco/isco/C2512\n")
    (melo / "corpus_elements.tsv").write_text("C1_de_000\tSoftwareentwickler\nC1_de_001 no tab here\n")
    with pytest.raises(DataError, match=r"corpus_elements.tsv: line 2: expected <id>\\t<value>, found 1 fields"):
        read_esco_source(tmp_path / "melo", esco_files["occupations"], esco_files["dutch_dev"], 42, ("de",))


def test_sample_weights_reach_the_fit():
    """A doc's weight moves the fit: the same contradicting titles decide the answer at weight 1, not at 0.01."""
    nlp = spacy.blank("xx")
    rows = np.eye(4)[[0, 0, 0, 1, 1, 1, 2, 2]]  # features: title kinds A, B, C
    labels = ["x", "x", "x", "y", "y", "y", "x", "x"]
    docs = [nlp.make_doc(f"t{i}") for i in range(len(labels))]
    for doc, label in zip(docs, labels, strict=True):
        doc.cats = {"x": float(label == "x"), "y": float(label == "y")}
    extra = [nlp.make_doc("c") for _ in range(6)]  # six C titles say y
    for doc in extra:
        doc.cats = {"x": 0.0, "y": 1.0}
    matrix = np.vstack([rows, np.eye(4)[[2] * 6]])

    def answer_for_c(weight: float) -> str:
        for doc in extra:
            doc.user_data[WEIGHT_KEY] = weight
        weights, bias = fit_linear_by_logistic_regression(matrix, docs + extra, ["x", "y"], "test", 10.0, None, 500)
        return ["x", "y"][int(np.argmax(weights @ np.eye(4)[2] + bias))]

    assert answer_for_c(1.0) == "y"
    assert answer_for_c(0.01) == "x"


def test_the_class_balanced_reader_keeps_a_weighted_example_with_its_weight(tmp_path):
    task = TASKS["department"]
    examples = [Example(f"Title {i}", "Sales", "t", i) for i in range(400)]
    weights = [{WEIGHT_KEY: 0.25} if i % 2 else {} for i in range(400)]
    write_corpus(tmp_path / "train.spacy", examples, task, user_data=weights)
    read = create_class_balanced_corpus(tmp_path / "train.spacy", [], 42)
    nlp = spacy.blank("xx")
    epochs = [[example.reference.text for example in read(nlp)] for _ in range(2)]
    for texts in epochs:
        numbers = [int(text.split()[1]) for text in texts]
        assert sum(1 for n in numbers if n % 2 == 0) == 200  # weight 1: every one, every epoch
        assert 25 < sum(1 for n in numbers if n % 2) < 75  # weight 0.25 of 200: about 50
    assert epochs[0] != epochs[1]  # a new draw each epoch


def test_a_corpus_keeps_its_user_data_beside_it_and_a_mismatch_names_the_file(tmp_path):
    task = TASKS["seniority"]
    path = tmp_path / "train.spacy"
    examples = [Example("Jefe de ventas", "Lead", "t", 0), Example("Stagiaire", "Junior", "t", 1)]
    write_corpus(path, examples, task, user_data=[{LANG_KEY: "es", WEIGHT_KEY: 0.5}, {LANG_KEY: "fr"}])
    assert read_user_data(path, LANG_KEY) == ["es", "fr"] and read_user_data(path, WEIGHT_KEY, 1.0) == [0.5, 1.0]
    assert not DocBin().from_disk(path).store_user_data  # not in the DocBin: srsly's per-doc decoding is slow
    user_data_path(path).write_text(json.dumps([{LANG_KEY: "es"}]))
    with pytest.raises(ValueError, match=r"train.user_data.json: expected a list of 2 dicts, one per doc of .*train"):
        read_user_data(path, LANG_KEY)
    write_corpus(path, examples, task)  # no user data now: the earlier file must not give these docs its languages
    assert read_user_data(path, LANG_KEY) == [None, None] and not user_data_path(path).exists()


def test_the_multilingual_dev_set_is_read_with_its_languages(tmp_path):
    examples, languages, skipped = read_multilingual_dev(REPO / "data" / "multilingual_dev.csv", TASKS["seniority"])
    assert len(examples) == 420 and not skipped
    assert Counter(languages) == {lang: 60 for lang in ("de", "fr", "es", "it", "nl", "pl", "pt")}
    broken = tmp_path / "dev.csv"
    broken.write_text("title,lang,seniority,department,note\nJefe de ventas,es,Boss,Sales,\n")
    with pytest.raises(DataError, match=r"dev.csv: line 2, field 'seniority': seniority label 'Boss'"):
        read_multilingual_dev(broken, TASKS["seniority"])


def test_esco_corpus_and_augment_carry_each_names_language_and_weight(tmp_path, data_dir):
    """The `corpora` and `augment` steps' ESCO lines on real data: the report counts what came in and was left out;
    the augmented train carries each ESCO name at its weight, the curated titles at 1."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "melo").symlink_to(data_dir.parent / "melo")
    (assets / "occupations_en.csv").symlink_to(data_dir.parent / "esco" / "occupations_en.csv")
    dutch = data_dir.parent / "esco" / "occupations_nl.csv"
    out = tmp_path / "corpus"
    command = [sys.executable, "scripts/esco_corpus.py", "seniority", str(assets), str(out), "--cap", "5"]
    subprocess.run([*command, "--languages", "es,it", "--dutch-dev", str(dutch)], cwd=REPO, check=True)
    report = json.loads((out / "esco.json").read_text())
    assert set(report["per_language"]) == {"es", "it"}
    assert all(count <= 5 for counts in report["per_language_and_label"].values() for count in counts.values())
    assert report["left_out"]["a Dutch dev concept"] > 0 and "| es |" in (out / "esco.md").read_text()
    task = TASKS["seniority"]
    to_docbin([Example("Leiter Vertrieb", "Lead", "t", 1), Example("Werkstudent", "Junior", "t", 2)], task).to_disk(
        out / "train.spacy"
    )
    pseudo = tmp_path / "pseudo.jsonl"
    answer = {"row_id": 0, "text": "Verkäufer", "seniority": "Professional", "department": "Sales", "backend": "test"}
    pseudo.write_text(json.dumps({**answer, "raw_answer": "{}"}) + "\n")
    augmented = out / "train_augmented.spacy"
    augment = [sys.executable, "scripts/augment.py", "seniority", str(out / "train.spacy"), str(pseudo), str(augmented)]
    subprocess.run([*augment, "--esco", str(out / "esco.spacy"), "--esco-weight", "0.3"], cwd=REPO, check=True)
    texts, _ = read_docbin(augmented, task)
    weights = read_user_data(augmented, WEIGHT_KEY, 1.0)
    assert texts[:3] == ["Leiter Vertrieb", "Werkstudent", "Verkäufer"] and weights[:3] == [1.0, 1.0, 1.0]
    assert len(texts) == 3 + report["names"] and set(weights[3:]) == {0.3}
    assert set(read_user_data(augmented, LANG_KEY, None)[3:]) == {"es", "it"}
    assert json.loads(augmented.with_suffix(".json").read_text())["esco_names"] == report["names"]
    docs = list(DocBin().from_disk(augmented).get_docs(spacy.blank("xx").vocab))
    assert all(sum(doc.cats.values()) == 1.0 for doc in docs)
