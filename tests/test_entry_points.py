"""Entry points: every name titlecat registers is declared, and what a package registers is found by importing it."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

from titlecat.registrations import entry_points


def test_pyproject_declares_every_name_titlecat_registers_and_no_other():
    """A saved pipeline that names a titlecat function loads with no `import titlecat` only if it is declared."""
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    found = entry_points("titlecat", submodules=True)
    assert found["spacy_architectures"]["titlecat.TitleNgramClassifier.v2"] == (
        "titlecat.components:build_title_ngram_classifier"
    )
    assert found["spacy_factories"] == {
        "titlecat_answers": "titlecat.combined:make_title_answers",
        "titlecat_piece_vectors": "titlecat.piece_vectors:make_piece_vectors",
        "titlecat_title_encoder": "titlecat.multilingual:make_title_encoder",
    }
    assert declared == found


SHIPPED = """
from spacy.language import Language
from spacy.util import registry
from thinc.api import Linear


@registry.architectures("shipped.Classifier.v1")
def build_classifier(nO: int = 2):
    return Linear(nO)


class Marker:
    def __init__(self, nlp, name):
        self.name = name

    def __call__(self, doc):
        return doc


Language.factory("shipped_marker")(Marker)
"""


def test_what_a_package_registers_is_found_by_importing_it(tmp_path):
    """Any module of a package, whatever registry it fills: what scripts/package.py declares for a wheel's --code."""
    package = tmp_path / "shipped_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import layers\n")
    (package / "layers.py").write_text(SHIPPED)
    assert entry_points("shipped_pkg", path=tmp_path) == {
        "spacy_architectures": {"shipped.Classifier.v1": "shipped_pkg.layers:build_classifier"},
        "spacy_factories": {"shipped_marker": "shipped_pkg.layers:Marker"},
    }
    # A stateless component's factory is a closure in spaCy: no entry point can name it, and the error says so.
    (package / "stateless.py").write_text(
        "from spacy.language import Language\n\n\n@Language.component('shipped_stateless')\n"
        "def stateless(doc):\n    return doc\n"
    )
    (package / "__init__.py").write_text("from . import layers, stateless\n")
    with pytest.raises(ValueError, match=r"spacy_factories 'shipped_stateless': registered while importing shipped_"):
        entry_points("shipped_pkg", path=tmp_path)
    assert "shipped_pkg" not in sys.modules  # found in a fresh interpreter
