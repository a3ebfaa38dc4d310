"""The component that turns the titlecat textcats of one pipeline into one answer per task.

A combined pipeline sources one exclusive textcat per task, named after the task
("seniority", "department"); each writes its labels' scores into `doc.cats`. The
`titlecat_answers` component, last in the pipeline, sets `doc._.<task>` (the best
label) and `doc._.<task>_score` (its score) for every task.

Shipped inside the combined wheel with `spacy package --code`, and registered through
the `spacy_factories` entry point when titlecat is installed, so this module must be
self-contained: it imports spacy only, never the rest of titlecat. No `from __future__ import annotations`:
the combined wheel promises any spaCy 3.8, and spaCy 3.8.2 (with confection 0.1) cannot resolve the
factory's annotations as strings.
"""

import catalogue
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry

FACTORY = "titlecat_answers"


class TitleAnswers:
    def __init__(self, nlp: Language, name: str, tasks: list[str]):
        self.nlp = nlp
        self.name = name
        self.tasks = list(tasks)
        self._labels: dict[str, tuple[str, ...]] | None = None
        for task in self.tasks:
            for attr in (task, f"{task}_score"):
                if not Doc.has_extension(attr):
                    Doc.set_extension(attr, default=None)

    def task_labels(self) -> dict[str, tuple[str, ...]]:
        """Each task's labels, read from its textcat once the pipeline is loaded (not at creation)."""
        if self._labels is None:
            missing = [task for task in self.tasks if task not in self.nlp.pipe_names]
            if missing:
                raise ValueError(f"{self.name}: no textcat named {missing} in the pipeline {self.nlp.pipe_names}")
            labels = {task: tuple(self.nlp.get_pipe(task).labels) for task in self.tasks}
            seen: dict[str, str] = {}
            for task, names in labels.items():
                for label in names:
                    if label in seen:
                        # Both textcats write doc.cats: one label name in two tasks would mix their scores.
                        raise ValueError(f"{self.name}: label {label!r} is in both {seen[label]!r} and {task!r}")
                    seen[label] = task
            self._labels = labels
        return self._labels

    def __call__(self, doc: Doc) -> Doc:
        cats = doc.cats
        for task, labels in self.task_labels().items():
            best = max(labels, key=lambda label: cats.get(label, 0.0))
            doc._.set(task, best)
            doc._.set(f"{task}_score", cats.get(best, 0.0))
        return doc


def make_title_answers(nlp: Language, name: str, tasks: list[str]) -> TitleAnswers:
    return TitleAnswers(nlp, name, tasks)


# A wheel that ships this file may be loaded where titlecat is installed too: register the
# factory once, whichever copy of this module is imported first (spaCy refuses a second
# function under the same name). check_exists looks at what is registered, not at entry points.
if not catalogue.check_exists(*registry.factories.namespace, FACTORY):
    Language.factory(FACTORY, default_config={"tasks": ["seniority", "department"]})(make_title_answers)


def combine(sources: dict[str, Language], lang: str | None = None) -> Language:
    """One pipeline from one trained titlecat pipeline per task: its `textcat` sourced under the task's name.

    A textcat that listens to a shared transformer/tok2vec (the trf config) gets its own copy of
    it first, so the two tasks' encoders never collide.
    """
    import spacy

    nlp = spacy.blank(lang or next(iter(sources.values())).lang)
    for task, source in sources.items():
        for name, pipe in source.pipeline:
            if "textcat" in getattr(pipe, "listening_components", []):
                source.replace_listeners(name, "textcat", ["model.tok2vec"])
        nlp.add_pipe("textcat", name=task, source=source)
    nlp.add_pipe(FACTORY, config={"tasks": list(sources)})
    return nlp
