"""spaCy-llm models for the job-title task: recorded answers and live OpenAI-compatible endpoints.

A model is called with prompts per doc (Iterable[Iterable[TitlePrompt]], one
shard per title) and yields responses per doc. Every backend shares
`TitleModel.answer`: look the prompt up in the answer store, ask the backend
only for what is missing, store each answer as it arrives, and ask once more
when an answer does not validate. `TitleModel.__call__` answers the distinct
prompts of spacy-llm's batch with up to `concurrency` requests in flight (a
prompt repeated in the batch is asked once) and tells its `listener` about
every answer and retry as it happens.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol  # noqa: UP035 - spacy-llm's type check reads typing's `_name`

import requests
from requests.adapters import HTTPAdapter
from spacy_llm.registry import registry

from ..assets import sha256_of
from ..readers import normalise_title, read_recorded_answers
from .live import CircuitBreaker, Throttle, retry_after_seconds
from .prompt import is_valid_answer
from .store import AnswerStore, answer_key

# Names the worker threads of a concurrent run, so that they can be told apart (and waited for).
WORKER_THREAD_PREFIX = "titlecat-llm"


@dataclass(frozen=True)
class TitlePrompt:
    """One rendered prompt and the title (and CV row, if known) it asks about."""

    text: str
    title: str
    row_id: int | None = None

    def __str__(self) -> str:
        return self.text


# Status of a response: "answer" (a raw answer, valid or not: the task validates),
# "failed" (the backend gave no answer after retries), "missing" (no recorded answer).
@dataclass(frozen=True)
class LLMResponse:
    raw: str | None
    status: str = "answer"
    backend: str = ""
    from_cache: bool = False
    requests: int = 0  # requests sent for this prompt in this run
    error: str | None = None
    attempts: list[str] = field(default_factory=list)  # every raw answer, first to last

    def __str__(self) -> str:
        return self.raw if self.raw is not None else f"<{self.status}: {self.error}>"


class RequestFailed(RuntimeError):
    """The backend gave no answer for one prompt (after retries)."""


class NoRecordedAnswer(LookupError):
    """The recorded answers hold nothing for this title/row."""


class BackendError(RuntimeError):
    """A problem no retry fixes (bad key, unknown model, bad URL): stops the run.

    `settings` names the model settings (config keys of `[components.llm.model]`) that fix it, so that a
    command line can say how its own users set them (a script flag, a project var).
    """

    def __init__(self, message: str, settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.settings = settings


class MissingKey(BackendError):
    """The environment variable that should hold the key is unset or empty (checked before any request)."""

    def __init__(self, variable: str, base_url: str, model: str):
        self.variable = variable
        self.problem = f"${variable} is not set: it should hold the key for {base_url} (model {model!r})"
        super().__init__(
            f'{self.problem}. Export it, set api_key_env to the variable that holds it, or set api_key_env = "" '
            "for a server that needs no key (Ollama, vLLM, llama.cpp)",
            settings=("api_key_env",),
        )


class Listener(Protocol):
    """Told by the model's workers what happens as it happens (the progress bar of `run.pseudo_label`)."""

    def answered(self, response: LLMResponse, prompts: int) -> None: ...

    def retrying(self, cause: str) -> None: ...


class TitleModel:
    """Base of the titlecat models: answer store, invalid-answer retry, status per prompt, concurrent requests."""

    backend: str = "unknown"

    def __init__(
        self,
        store_path: str | Path | None = None,
        retry_invalid: int = 1,
        context_length: int = 4096,
        concurrency: int = 1,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.store = AnswerStore(store_path) if store_path else None
        self.retry_invalid = retry_invalid
        self._context_length = context_length
        self.concurrency = concurrency
        self.listener: Listener | None = None
        self._stop = threading.Event()  # set when a batch is abandoned (error, Ctrl-C): workers send nothing more

    @property
    def context_length(self) -> int:
        # A title is a few tokens: the task never shards, this only satisfies spacy-llm's sharding check.
        return self._context_length

    def identity(self, prompt: TitlePrompt) -> dict[str, Any]:
        """What decides the answer: prompts with the same identity share stored answers."""
        raise NotImplementedError

    def request(self, prompt: TitlePrompt) -> str:
        """One answer from the backend; RequestFailed / NoRecordedAnswer when there is none."""
        raise NotImplementedError

    def __call__(self, prompts: Iterable[Iterable[TitlePrompt]]) -> Iterable[Iterable[LLMResponse]]:
        shards = [list(shard_prompts) for shard_prompts in prompts]
        flat = [prompt for shard_prompts in shards for prompt in shard_prompts]
        responses = iter(self.answer_all(flat))
        for shard_prompts in shards:
            yield [next(responses) for _ in shard_prompts]

    def answer_all(self, prompts: list[TitlePrompt]) -> list[LLMResponse]:
        """One response per prompt, in order; each distinct prompt is answered once, `concurrency` at a time."""
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(answer_key(self.identity(prompt)), []).append(index)

        def answer_group(item: tuple[str, list[int]]) -> LLMResponse:
            key, indexes = item
            response = self.answer(prompts[indexes[0]], key)
            if self.listener is not None:
                self.listener.answered(response, len(indexes))
            return response

        answered = self._map(answer_group, list(groups.items()))
        responses: list[LLMResponse | None] = [None] * len(prompts)
        for (_, indexes), response in zip(groups.items(), answered, strict=True):
            responses[indexes[0]] = response
            for index in indexes[1:]:  # the same prompt again: the answer just given, no request
                responses[index] = replace(response, from_cache=response.status == "answer", requests=0)
        return responses

    def _map(self, function: Callable, items: list) -> list:
        self._stop.clear()
        if self.store is not None:
            self.store.reopen()
        if self.concurrency == 1 or len(items) <= 1:
            return [function(item) for item in items]
        executor = ThreadPoolExecutor(min(self.concurrency, len(items)), thread_name_prefix=WORKER_THREAD_PREFIX)
        futures = [executor.submit(function, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # An error stops the run (Ctrl-C too): nothing queued is sent, requests in flight are left to time out.
            self._stop.set()
            raise
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._stop.set()
        if self.store is not None:
            self.store.close()

    def answer(self, prompt: TitlePrompt, key: str | None = None) -> LLMResponse:
        key = key or answer_key(self.identity(prompt))
        answers = self.store.get(key) if self.store is not None else []
        for raw in answers:
            if is_valid_answer(raw):
                return LLMResponse(raw, backend=self.backend, from_cache=True, attempts=answers)
        if len(answers) > self.retry_invalid:
            # Already asked 1 + retry_invalid times and never valid: the same inputs send no new request.
            return LLMResponse(answers[-1], backend=self.backend, from_cache=True, attempts=answers)
        sent = 0
        while True:
            try:
                sent += 1
                raw = self.request(prompt)
            except RequestFailed as error:
                return LLMResponse(None, "failed", self.backend, requests=sent, error=str(error), attempts=answers)
            except NoRecordedAnswer as error:
                return LLMResponse(None, "missing", self.backend, requests=0, error=str(error), attempts=answers)
            if self.store is not None:
                self.store.add(key, raw, backend=self.backend, title=prompt.title, row_id=prompt.row_id)
            answers.append(raw)
            if is_valid_answer(raw) or len(answers) > self.retry_invalid:
                return LLMResponse(raw, backend=self.backend, requests=sent, attempts=answers)


class RecordedModel(TitleModel):
    """Serves recorded answers (gemini_synthetic.csv) as if a model gave them: no network, nothing invented.

    The answer for a prompt is the recorded row of its CV position (`row_id`),
    written as JSON exactly as recorded, so that the usual parser validates it.
    A prompt without a row id gets the first recorded row with that title.
    """

    def __init__(self, path: str | Path, recorded_model: str, **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path)
        self.backend = f"recorded:{recorded_model}"
        self._rows = read_recorded_answers(self.path)
        self._by_title: dict[str, int] = {}
        for row_id in sorted(self._rows):
            self._by_title.setdefault(normalise_title(self._rows[row_id]["position"]), row_id)
        self._source = sha256_of(self.path)

    def identity(self, prompt: TitlePrompt) -> dict[str, Any]:
        return {"backend": self.backend, "recorded": self._source, "row_id": prompt.row_id, "title": prompt.title}

    def request(self, prompt: TitlePrompt) -> str:
        row_id = prompt.row_id if prompt.row_id is not None else self._by_title.get(prompt.title)
        record = self._rows.get(row_id) if row_id is not None else None
        if record is None:
            raise NoRecordedAnswer(f"{self.path.name}: no recorded answer for row {prompt.row_id} ({prompt.title!r})")
        if normalise_title(record["position"]) != prompt.title:
            raise NoRecordedAnswer(
                f"{self.path.name}: row {row_id} records {record['position']!r}, not the title {prompt.title!r}"
            )
        return json.dumps({"department": record["department"], "seniority": record["seniority"]}, ensure_ascii=False)


class OpenAICompatibleModel(TitleModel):
    """Any chat-completions endpoint: OpenAI, Gemini's OpenAI-compatible API, vLLM, llama.cpp, Ollama.

    The key is read from the environment variable `api_key_env`; it is never
    stored, logged or part of the store key. An unset variable stops the run
    before the first request; `api_key_env = ""` sends no key (local servers).
    Up to `concurrency` requests are in flight, at most `requests_per_minute`
    are sent (0: no limit), and all workers share one backoff when the server
    pushes back (429, `Retry-After`). A circuit breaker stops the run with one
    error when the endpoint looks down (see `CircuitBreaker`).
    """

    RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 64,
        json_mode: bool = False,
        timeout: float = 30.0,
        max_tries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 8,
        requests_per_minute: float = 0,
        breaker_titles: int = 3,
        breaker_seconds: float = 10.0,
        store_path: str | None = None,
        retry_invalid: int = 1,
    ):
        if not base_url or not model:
            raise ValueError("OpenAI-compatible backend: base_url and model must both be set")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        if api_key_env and not os.environ.get(api_key_env):
            # Checked before anything is sent: a missing key would otherwise show up as 401s, or worse, as nothing.
            raise MissingKey(api_key_env, base_url, model)
        super().__init__(store_path=store_path, retry_invalid=retry_invalid, concurrency=concurrency)
        self.backend = f"openai:{model}"
        self.params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if json_mode:
            self.params["response_format"] = {"type": "json_object"}
        self.timeout = timeout
        self.max_tries = max_tries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.throttle = Throttle(requests_per_minute, backoff, max_backoff)
        self.breaker = CircuitBreaker(breaker_titles, breaker_seconds)
        self._session = requests.Session()
        # One connection per worker, kept alive between requests.
        self._session.mount(self.url, HTTPAdapter(pool_connections=1, pool_maxsize=max(concurrency, 10)))

    def identity(self, prompt: TitlePrompt) -> dict[str, Any]:
        # Row-independent: a title repeated across CVs is asked once.
        return {
            "backend": "openai-compatible",
            "url": self.url,
            "model": self.model,
            **self.params,
            "prompt": prompt.text,
        }

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) or "" if self.api_key_env else ""
        return text.replace(key, "***") if len(key) >= 4 else text

    def _refused(self, response: requests.Response) -> BackendError:
        """An HTTP error no retry fixes (401, 403, 404, 400, ...): what to check, then the server's own words."""
        settings: tuple[str, ...] = ("base_url", "model")
        check = "the base URL (the part before /chat/completions) and the model name"
        if self.api_key_env:
            settings += ("api_key_env",)
            check += f", and the key in ${self.api_key_env}"
        elif response.status_code in (401, 403):
            check += "; the server wants a key and none was sent"
        body = self._redact(response.text[:300]).strip() or "(empty body)"
        return BackendError(
            f"{self.url}: HTTP {response.status_code} for model {self.model!r}, not retried. Check {check}. "
            f"The server said: {body}",
            settings=settings,
        )

    def _down(self) -> BackendError:
        message = (
            f"{self.url} (model {self.model!r}) looks down: {self.breaker.tripped_titles} titles in a row got no "
            f"answer; last cause: {self.breaker.last_cause}. Stopped"
        )
        if self.breaker.last_cause.startswith("timed out"):
            # A slow model (a local one on CPU) is not down: it needs more time per answer.
            message += f". A model that is only slow needs a timeout above {self.timeout} s"
            return BackendError(message, settings=("timeout",))
        return BackendError(message, settings=("base_url",))

    def _check_running(self) -> None:
        if self.breaker.tripped:
            raise self._down()
        if self._stop.is_set():
            raise RequestFailed(f"{self.url}: stopped before sending")

    def request(self, prompt: TitlePrompt) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt.text}], **self.params}
        problem = ""
        for attempt in range(self.max_tries):
            self._check_running()
            sent_at = self.throttle.acquire(self._stop)
            self._check_running()
            down = False  # a failure that counts towards the circuit breaker
            pushed_back = False  # the shared pause of the throttle replaces this title's own backoff
            try:
                response = self._session.post(self.url, json=body, headers=headers, timeout=self.timeout)
            except requests.Timeout:
                problem, down = f"timed out after {self.timeout} s", True
            except requests.ConnectionError as error:
                # The OS's reason ("[Errno 111] Connection refused") rather than urllib3's nested repr.
                reason = re.search(r"\[Errno [^\]]*\][^'\")]*", str(error))
                problem, down = f"connection error: {reason.group(0) if reason else type(error).__name__}", True
            else:
                if response.status_code == 200:
                    try:
                        content = response.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        problem = f"malformed response body: {self._redact(response.text[:200])!r}"
                    else:
                        self.breaker.answered()
                        self.throttle.answered()
                        return content
                elif response.status_code in self.RETRY_STATUS:
                    problem, down = f"HTTP {response.status_code}", response.status_code >= 500
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                    pushed_back = response.status_code == 429 or retry_after is not None
                    if pushed_back:
                        # The server pushes back: every worker pauses, not only this one.
                        self.throttle.push_back(sent_at, retry_after)
                else:
                    raise self._refused(response)
            last = attempt + 1 == self.max_tries
            if down and self.breaker.failure(prompt.title, problem, sent_at=sent_at, gave_up=last):
                raise self._down()
            if last:
                break
            if self.listener is not None:
                self.listener.retrying(problem)
            if not pushed_back:
                self._stop.wait(self._backoff_delay(attempt))
        raise RequestFailed(f"{self.url}: {problem} ({self.max_tries} tries)")

    def _backoff_delay(self, attempt: int) -> float:
        delay = self.backoff * 2**attempt * (1 + random.random() / 4)  # jitter: clients retrying together spread out
        return min(delay, self.max_backoff)


class SpacyLLMModel(TitleModel):
    """Wraps one of spacy-llm's built-in models (e.g. spacy.GPT-4.v3, spacy.Claude-2.v2) with the store and checks.

    Their own HTTP retries apply; an exception from them is a failed answer.
    """

    def __init__(self, model: Any, name: str, **kwargs):
        super().__init__(**kwargs)
        self.inner = model
        self.backend = f"spacy-llm:{name}"

    def identity(self, prompt: TitlePrompt) -> dict[str, Any]:
        return {"backend": self.backend, "prompt": prompt.text}

    def request(self, prompt: TitlePrompt) -> str:
        try:
            return str(list(list(self.inner([[prompt.text]]))[0])[0])
        except (ConnectionError, TimeoutError, ValueError, requests.RequestException) as error:
            raise RequestFailed(f"{self.backend}: {type(error).__name__}: {error}") from None


@registry.llm_models("titlecat.Recorded.v1")
def make_recorded_model(
    path: str,
    recorded_model: str = "gemini-2.0-flash",
    store_path: str | None = None,
    retry_invalid: int = 0,
) -> RecordedModel:
    return RecordedModel(path, recorded_model, store_path=store_path, retry_invalid=retry_invalid)


# The class is the factory: its constructor's arguments are the config's settings.
registry.llm_models.register("titlecat.OpenAICompatible.v1", func=OpenAICompatibleModel)


@registry.llm_models("titlecat.SpacyLLM.v1")
def make_spacy_llm_model(model: Any, name: str, store_path: str | None = None, retry_invalid: int = 1) -> SpacyLLMModel:
    return SpacyLLMModel(model, name, store_path=store_path, retry_invalid=retry_invalid)


def iter_responses(responses: Iterable[Iterable[Any]]) -> Iterator[Any]:
    for shard_responses in responses:
        yield from shard_responses
