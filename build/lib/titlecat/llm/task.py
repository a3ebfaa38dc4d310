"""The spacy-llm task: one prompt per job title, both labels parsed into `doc.cats`.

One task gives both labels (one request per title instead of two). The
department and seniority label sets do not overlap, so `doc.cats` holds the
11 + 6 labels, one-hot per task. What happened to each doc is in
`doc.user_data[RESULT_KEY]` (status, raw answer, error, backend, from_cache).
"""

from __future__ import annotations

from typing import Any, Iterable, Tuple  # noqa: UP035 - spacy-llm's type check reads typing's `_name`

from spacy.tokens import Doc
from spacy_llm.registry import registry

from ..labels import DEPARTMENT_LABELS, SENIORITY_LABELS, one_hot
from .models import LLMResponse, TitlePrompt
from .prompt import DEFAULT_EXAMPLES, InvalidAnswer, check_examples, instructions, parse_answer, render_prompt

ROW_ID_KEY = "titlecat_row_id"  # doc.user_data: the CV position's running index, set by the caller
RESULT_KEY = "titlecat_llm"  # doc.user_data: the outcome for this doc

# Outcomes: "labelled", "invalid" (answer did not validate), "failed" (no answer), "missing" (no recorded answer).
STATUSES = ("labelled", "invalid", "failed", "missing")


class JobTitleTask:
    def __init__(self, examples: Iterable[dict] | None = None):
        self.examples = check_examples(list(DEFAULT_EXAMPLES if examples is None else examples))
        self._instructions = instructions(self.examples)

    @property
    def prompt_template(self) -> str:
        return self._instructions

    @property
    def labels(self) -> Tuple[str, ...]:  # noqa: UP006
        return DEPARTMENT_LABELS + SENIORITY_LABELS

    def generate_prompts(
        self, docs: Iterable[Doc], context_length: int | None = None
    ) -> Iterable[Tuple[Iterable[TitlePrompt], Iterable[Doc]]]:  # noqa: UP006
        # One shard per doc: a job title never comes near a context limit.
        for doc in docs:
            title = " ".join(doc.text.split())
            yield [TitlePrompt(render_prompt(self._instructions, title), title, doc.user_data.get(ROW_ID_KEY))], [doc]

    def parse_responses(
        self, shards: Iterable[Iterable[Doc]], responses: Iterable[Iterable[LLMResponse]]
    ) -> Iterable[Doc]:
        for doc_shards, doc_responses in zip(shards, responses, strict=True):
            (doc,) = list(doc_shards)
            (response,) = list(doc_responses)
            set_result(doc, response)
            yield doc


def set_result(doc: Doc, response: Any) -> None:
    """Validate one response into doc.cats; a response that does not validate sets no label."""
    if not isinstance(response, LLMResponse):  # a plain string from a model outside titlecat
        response = LLMResponse(str(response))
    result: dict[str, Any] = {
        "status": response.status,
        "raw_answer": response.raw,
        "backend": response.backend,
        "from_cache": response.from_cache,
        "requests": response.requests,
        "error": response.error,
        "attempts": list(response.attempts),
    }
    doc.cats = {}
    if response.status == "answer":
        try:
            parsed = parse_answer(response.raw)
        except InvalidAnswer as error:
            result.update(status="invalid", error=str(error))
        else:
            result.update(status="labelled", department=parsed.department, seniority=parsed.seniority)
            doc.cats = {**one_hot(parsed.department, DEPARTMENT_LABELS), **one_hot(parsed.seniority, SENIORITY_LABELS)}
    doc.user_data[RESULT_KEY] = result


@registry.llm_tasks("titlecat.JobTitle.v1")
def make_job_title_task(examples: Iterable[dict] | None = None) -> JobTitleTask:
    """Department + seniority of one job title; `examples` (e.g. spacy.FewShotReader.v1) replace the default facts."""
    return JobTitleTask(examples)
