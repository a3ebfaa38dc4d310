"""The component that turns the titlecat textcats of one pipeline into one answer per task.

A combined pipeline sources one exclusive textcat per task, named after the task
("seniority", "department"); each writes its labels' scores into `doc.cats`. The
`titlecat_answers` component, last in the pipeline, sets `doc._.<task>` (the best
label) and `doc._.<task>_score` (its score) for every task; both are None for
an empty or whitespace-only doc, whose scores are all 0.0. A task's scores may be
calibrated by a temperature fitted on cv-dev (`set_temperature`; titlecat/confidence.py).

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
# titlecat.components.title_text's doc.user_data key: the text the textcats read before, where they are titlecat's.
TEXT_KEY = "titlecat_text"


class TitleAnswers:
    def __init__(self, nlp: Language, name: str, tasks: list[str]):
        self.nlp = nlp
        self.name = name
        self.tasks = list(tasks)
        self._labels: dict[str, tuple[str, ...]] | None = None
        self._register_extensions()

    def _register_extensions(self) -> None:
        for task in self.tasks:
            for attr in (task, f"{task}_score"):
                if not Doc.has_extension(attr):
                    Doc.set_extension(attr, default=None)

    def __setstate__(self, state: dict) -> None:
        # Unpickled in a new process (the spawn and forkserver start methods), where no Doc extension exists yet.
        self.__dict__.update(state)
        self._register_extensions()

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
        extensions = doc._  # one Underscore object for the doc's answers: spaCy builds one on each `doc._`
        if not (doc.user_data.get(TEXT_KEY) or doc.text).strip():
            # No title, no answer (titlecat predict's `empty` status). titlecat's textcats score such a doc 0.0
            # already, alone and in a batch (titlecat.components.unscored_if_blank); a textcat of another
            # architecture may not: its scores are set to 0.0 here too, and no label is chosen.
            for task, labels in self.task_labels().items():
                cats.update(dict.fromkeys(labels, 0.0))
                extensions.set(task, None)
                extensions.set(f"{task}_score", None)
            return doc
        for task, labels in self.task_labels().items():
            best = max(labels, key=lambda label: cats.get(label, 0.0))
            extensions.set(task, best)
            extensions.set(f"{task}_score", cats.get(best, 0.0))
        return doc


def make_title_answers(nlp: Language, name: str, tasks: list[str]) -> TitleAnswers:
    return TitleAnswers(nlp, name, tasks)


# A wheel that ships this file may be loaded where titlecat is installed too: register the
# factory once, whichever copy of this module is imported first (spaCy refuses a second
# function under the same name). check_exists looks at what is registered, not at entry points.
if not catalogue.check_exists(*registry.factories.namespace, FACTORY):
    Language.factory(FACTORY, default_config={"tasks": ["seniority", "department"]})(make_title_answers)


def combine(
    sources: dict[str, Language], lang: str | None = None, temperatures: dict[str, float] | None = None
) -> Language:
    """One pipeline from one trained titlecat pipeline per task: its `textcat` sourced under the task's name.

    A textcat that listens to a shared transformer/tok2vec (the trf config) gets its own copy of
    it first, so the two tasks' encoders never collide. `temperatures` (task -> T) calibrates a
    task's scores (`set_temperature`); none: the scores as trained.
    """
    import spacy

    # The largest batch of the sources (trf: 4000, sorted by length into few passes; cpu: 1000).
    batch_size = max(source.batch_size for source in sources.values())
    nlp = spacy.blank(lang or next(iter(sources.values())).lang, config={"nlp": {"batch_size": batch_size}})
    shared = add_shared_encoder(nlp, sources)
    for task, source in sources.items():
        for name, pipe in source.pipeline:
            if "textcat" in getattr(pipe, "listening_components", []):
                source.replace_listeners(name, "textcat", ["model.tok2vec"])
        if not shared and ENCODER_PIPE in source.pipe_names:
            # Vector components of different kinds (the fast pipeline's piece vectors, the encoder): each sets
            # doc._.title_vector just before the textcat that reads it, so each task reads its own.
            nlp.add_pipe(ENCODER_PIPE, name=f"{ENCODER_PIPE}_{task}", source=source)
        nlp.add_pipe("textcat", name=task, source=source)
    nlp.add_pipe(FACTORY, config={"tasks": list(sources)})
    for task, temperature in (temperatures or {}).items():
        set_temperature(nlp, task, temperature)
    return nlp


ENCODER_PIPE = "title_encoder"


def add_shared_encoder(nlp: Language, sources: dict[str, Language]) -> bool:
    """The sources' title vector component, once, when they all have the same one (the same encoder or piece table,
    the same prefix): every textcat reads its `doc._.title_vector`, so it runs once per title. False when they
    differ: `combine` then puts each source's own before its textcat. A source without one is refused."""
    with_encoder = {task: source for task, source in sources.items() if ENCODER_PIPE in source.pipe_names}
    if not with_encoder:
        return False
    if len(with_encoder) < len(sources):
        raise ValueError(
            f"only {sorted(with_encoder)} of {sorted(sources)} have a {ENCODER_PIPE}: combine like with like"
        )
    signatures = {task: source.get_pipe(ENCODER_PIPE).signature() for task, source in with_encoder.items()}
    if len(set(signatures.values())) > 1:
        return False
    nlp.add_pipe(ENCODER_PIPE, source=next(iter(with_encoder.values())))
    return True


# Titles the temperature is checked on: any will do, the check is about the architecture, not the data.
PROBE_TITLES = ("Leiterin Vertrieb DACH", "Software Engineer", "Chargé de recrutement", "Einkäufer")


def set_temperature(nlp: Language, task: str, temperature: float) -> None:
    """Temperature scaling of a task's scores, folded into its textcat: the output layer's weights and biases
    divided by T, so that the scores become softmax(logits / T) at no cost per title. The order of the
    labels, and the best one, never changes. The effect is checked on a few titles against the formula
    (p**(1/T), renormalised): an architecture whose scores are not a softmax of that layer is refused.
    """
    if not temperature > 0:
        raise ValueError(f"temperature {temperature} for {task!r}: must be > 0")
    if temperature == 1.0:
        return
    textcat = nlp.get_pipe(task)
    # The logits' linear layers: one, or (the multilingual classifier) one for the n-grams and one for the vector.
    layers = [
        textcat.model.get_ref(ref) for ref in ("output_layer", "vector_output_layer") if textcat.model.has_ref(ref)
    ]
    if not layers or not all({"W", "b"} <= set(layer.param_names) for layer in layers):
        raise ValueError(f"{task}: the textcat has no linear output layer (W, b) to calibrate")
    labels = list(textcat.labels)
    before = [[doc.cats[label] for label in labels] for doc in probe(nlp, task)]
    for layer in layers:
        for name in ("W", "b"):
            layer.set_param(name, layer.get_param(name) / temperature)
    after = [[doc.cats[label] for label in labels] for doc in probe(nlp, task)]
    for scores, scaled in zip(before, after, strict=True):
        powered = [score ** (1.0 / temperature) for score in scores]
        expected = [value / sum(powered) for value in powered]
        if max(abs(a - b) for a, b in zip(scaled, expected, strict=True)) > 1e-4:
            for layer in layers:  # leave the pipeline as it was
                for name in ("W", "b"):
                    layer.set_param(name, layer.get_param(name) * temperature)
            raise ValueError(f"{task}: the textcat's scores are not a softmax of its output layer: cannot calibrate")


def probe(nlp: Language, task: str) -> list[Doc]:
    """PROBE_TITLES through the pipeline up to the task's textcat (an encoder before it sets what it reads)."""
    docs = [nlp.make_doc(title) for title in PROBE_TITLES]
    for name, pipe in nlp.pipeline:
        docs = list(pipe.pipe(docs)) if hasattr(pipe, "pipe") else [pipe(doc) for doc in docs]
        if name == task:
            return docs
    raise ValueError(f"no component {task!r} in {nlp.pipe_names}")
