"""A local stand-in for the Anthropic Messages API, for driving the real Claude Code CLI without the network.

It speaks what the CLI uses: ``POST /v1/messages`` (streamed as server-sent events, or one JSON message), text and
``tool_use`` content blocks with ``stop_reason`` ``tool_use``/``end_turn``, and ``count_tokens``. What it answers
is decided by a *brain*: a function from the request body to the content blocks of the reply, which plays the
model — it reads the conversation (system prompt, tool results) and makes the tool calls a real model would.
Every request is kept in ``requests`` for the test to inspect.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Block = dict[str, Any]
Brain = Callable[[dict[str, Any]], list[Block]]


def text(value: str) -> Block:
    return {"type": "text", "text": value}


_ids = itertools.count(1)


def tool(name: str, **arguments: Any) -> Block:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):06d}", "name": name, "input": arguments}


# ------------------------------------------------------------------------------ reading a request


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    if isinstance(system, str):
        return system
    return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))


def _content(message: dict[str, Any]) -> list[Block]:
    content = message.get("content")
    if isinstance(content, str):
        return [text(content)]
    return [b for b in content or [] if isinstance(b, dict)]


def block_text(block: Block) -> str:
    """The text of a text block or a tool_result (whose content is a string or a list of text blocks)."""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


def user_texts(body: dict[str, Any]) -> list[str]:
    """Every user text block and tool result, oldest first."""
    return [block_text(b) for m in body.get("messages", []) if m.get("role") == "user" for b in _content(m)]


def tool_calls(body: dict[str, Any]) -> list[tuple[Block, str]]:
    """(tool_use block, its result text) for every tool call made so far in the conversation, oldest first."""
    results: dict[str, str] = {}
    for m in body.get("messages", []):
        for b in _content(m):
            if b.get("type") == "tool_result":
                results[str(b.get("tool_use_id"))] = block_text(b)
    calls = []
    for m in body.get("messages", []):
        if m.get("role") == "assistant":
            calls.extend((b, results.get(str(b.get("id")), "")) for b in _content(m) if b.get("type") == "tool_use")
    return calls


def latest_user_text(body: dict[str, Any]) -> str:
    """The blocks of the last user message, joined (the newest prompt, tool result or notification)."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return "\n".join(block_text(b) for b in _content(users[-1])) if users else ""


def read_result_text(result: str) -> str:
    """The file text shown by a Read tool result, without its line numbers (``12\tline`` or ``12→line``)."""
    lines = []
    for line in result.splitlines():
        for sep in ("\t", "\u2192"):
            head, found, rest = line.partition(sep)
            if found and head.strip().isdigit():
                lines.append(rest)
                break
        else:
            lines.append(line)
    return "\n".join(lines)


def read_result_json(result: str) -> Any:
    """The JSON document shown by a Read tool result."""
    joined = read_result_text(result)
    return json.JSONDecoder().raw_decode(joined[joined.find("{"):])[0]


# ------------------------------------------------------------------------------------------- server


class StandInAPI:
    """``with StandInAPI(brain) as api:`` then point the CLI at ``api.url`` (``ANTHROPIC_BASE_URL``)."""

    def __init__(self, brain: Brain) -> None:
        self.brain = brain
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []  # when each request arrived (monotonic), for diagnosing slow runs
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if "count_tokens" in self.path:
                    self._json(200, {"input_tokens": 100})
                    return
                if not self.path.startswith("/v1/messages"):
                    self.do_GET()
                    return
                with api._lock:
                    api.requests.append(body)
                    api.times.append(time.monotonic())
                try:
                    blocks = api.brain(body)
                except BaseException as exc:  # surfaced by the test; the agent just ends its turn (an HTTP
                    api.errors.append(exc)    # error would make the CLI retry with backoff for minutes)
                    blocks = [text(f"stand-in model failed: {exc!r}")]
                stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
                message = {"id": f"msg_{next(_ids):06d}", "type": "message", "role": "assistant",
                           "model": body.get("model", "stand-in"), "content": blocks, "stop_reason": stop,
                           "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 20}}
                if not body.get("stream"):
                    self._json(200, message)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                for event, data in _events(message):
                    self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="stand-in-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StandInAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 100, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {"type": "text", "text": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                          "delta": {"type": "text_delta", "text": block["text"]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {**block, "input": {}}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": json.dumps(block["input"])}}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": 20}}
    yield "message_stop", {"type": "message_stop"}
