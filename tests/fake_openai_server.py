"""A fake OpenAI chat-completions server on 127.0.0.1 that injects faults per job title.

`script` maps a title to the actions of its successive requests (the last
action repeats): "ok" (a valid answer from `answers` or Other/Professional),
"429", "500", "401", "404" (an unknown model), "timeout" (sleeps past the client's timeout), "malformed"
(content that is not JSON), "bad_label" (a department outside the set), or
any other string, sent as the answer content. A 429 carries `Retry-After:
<retry_after>`. The server stops itself after `lifetime` seconds even if a
test forgets to. `python tests/fake_openai_server.py --delay 0.05` serves
"ok" to every title in a process of its own (benchmarks) and prints its URL.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from titlecat.llm import title_of_prompt


class FakeOpenAI:
    def __init__(
        self,
        script: dict[str, list[str]] | None = None,
        answers: dict[str, dict] | None = None,
        *,
        api_key: str | None = None,
        delay: float = 0.0,
        sleep: float = 1.5,
        lifetime: float = 90.0,
        retry_after: str | None = "0",
    ):
        self.script = script or {}
        self.answers = answers or {}
        self.api_key = api_key
        self.delay = delay  # seconds before every answer (lets a test kill a run midway)
        self.sleep = sleep  # seconds a "timeout" action waits
        self.retry_after = retry_after
        self.requests: Counter = Counter()  # title -> requests received
        self.auth_ok: Counter = Counter()
        self.with_key = 0  # requests that carried an Authorization header
        self.arrivals: list[tuple[float, str, str]] = []  # (time.monotonic(), title, action) per request
        self.log: dict[str, list[str]] = defaultdict(list)  # title -> actions taken
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client's workers reuse their connections
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                title = title_of_prompt(body["messages"][-1]["content"])
                with server._lock:
                    n = server.requests[title]
                    server.requests[title] += 1
                    server.with_key += "Authorization" in self.headers
                    if server.api_key is not None:
                        server.auth_ok[self.headers.get("Authorization") == f"Bearer {server.api_key}"] += 1
                    actions = server.script.get(title, ["ok"])
                    action = actions[min(n, len(actions) - 1)]
                    server.log[title].append(action)
                    server.arrivals.append((time.monotonic(), title, action))
                if server.delay:
                    time.sleep(server.delay)
                if action == "429":
                    headers = {"Retry-After": server.retry_after} if server.retry_after is not None else {}
                    return self._send(429, {"error": {"message": "rate limited"}}, headers)
                if action == "401":
                    return self._send(
                        401,
                        {"error": {"message": "Incorrect API key provided: " + str(self.headers.get("Authorization"))}},
                    )
                if action == "404":
                    message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
                    return self._send(404, {"error": {"message": message, "code": "model_not_found"}})
                if action == "500":
                    return self._send(500, {"error": {"message": "server error"}})
                if action == "timeout":
                    time.sleep(server.sleep)
                    content = json.dumps(
                        server.answers.get(title, {"department": "Other", "seniority": "Professional"})
                    )
                elif action == "ok":
                    content = json.dumps(
                        server.answers.get(title, {"department": "Other", "seniority": "Professional"})
                    )
                elif action == "malformed":
                    content = '{"department": "Sales", "seniority": '
                elif action == "bad_label":
                    content = json.dumps({"department": "Astronautics", "seniority": "Senior"})
                else:
                    content = action
                reply = {"id": "x", "object": "chat.completion", "model": body.get("model")}
                reply["choices"] = [{"index": 0, "message": {"role": "assistant", "content": content}}]
                self._send(200, reply)

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the default 5 drops connections when many workers connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    def start(self) -> FakeOpenAI:
        self._thread.start()
        self._timer.start()
        return self

    def wait_quiet(self, seconds: float = 0.3, timeout: float = 10.0) -> None:
        """Return once no request has arrived for `seconds`: what a stopped client sent last has been counted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                last = self.arrivals[-1][0] if self.arrivals else 0.0
            if time.monotonic() - last >= seconds:
                return
            time.sleep(0.05)
        raise AssertionError(f"requests still arriving after {timeout} s")

    def stop(self) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve 'ok' to every title, after --delay seconds each")
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--lifetime", type=float, default=600.0)
    options = parser.parse_args()
    server = FakeOpenAI(delay=options.delay, lifetime=options.lifetime).start()
    print(server.base_url, flush=True)
    server._thread.join()
    sys.exit(0)
