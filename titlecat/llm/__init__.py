"""Pseudo-labelling of job titles with spacy-llm (importing this registers the task and models)."""

from .models import (
    BackendError,
    LLMResponse,
    MissingKey,
    OpenAICompatibleModel,
    RecordedModel,
    SpacyLLMModel,
    TitleModel,
    TitlePrompt,
)
from .prompt import InvalidAnswer, ParsedAnswer, parse_answer, render_prompt, title_of_prompt
from .store import AnswerStore
from .task import RESULT_KEY, ROW_ID_KEY, JobTitleTask

__all__ = [
    "AnswerStore",
    "BackendError",
    "InvalidAnswer",
    "JobTitleTask",
    "LLMResponse",
    "MissingKey",
    "OpenAICompatibleModel",
    "ParsedAnswer",
    "RESULT_KEY",
    "ROW_ID_KEY",
    "RecordedModel",
    "SpacyLLMModel",
    "TitleModel",
    "TitlePrompt",
    "parse_answer",
    "render_prompt",
    "title_of_prompt",
]
