"""A mock model server that speaks the Anthropic Messages API on 127.0.0.1.

Tests and the demo point pi at it instead of a real model provider::

    with MockModelServer(api_key="test-key") as server:
        server.reply_with_tool_call("write", {"path": "a.txt", "content": "hi"}, then="done")
        (agent_dir / "models.json").write_text(json.dumps(server.pi_models_config()))
        ...  # pi, with ANTHROPIC_API_KEY=test-key, now talks to server.base_url

The server accepts ``POST /v1/messages`` only with the expected key (in the
``x-api-key`` header, as Anthropic's SDK sends it, or as a bearer token), and
rejects every other key with 401 and a JSON error. It records each accepted
request's path, headers (without the credential headers) and JSON body, and
only counts rejected ones. Replies are scripted: each new user turn takes the
next scripted reply, or the default text when none is left. A tool-call reply
is followed, on the request that carries its tool result, by its final text.

The server uses only the standard library and binds 127.0.0.1, so a sandbox
reaches it only with the host's network (``SessionSpec(network="host")``).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets as random_tokens
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

import attrs

__all__ = [
    "DEFAULT_REPLY",
    "MOCK_MODEL_ID",
    "MockModelServer",
    "RecordedRequest",
    "TextReply",
    "ToolCallReply",
]

logger = logging.getLogger("pi_sandbox.testing.mock_model")

DEFAULT_REPLY: Final = "pong from the mock model"
MOCK_MODEL_ID: Final = "pi-sandbox-mock"
MESSAGES_PATH: Final = "/v1/messages"
# Request headers that carry the credential; they are never recorded.
_CREDENTIAL_HEADERS: Final = frozenset({"x-api-key", "authorization"})
_MAX_BODY_BYTES: Final = 16 * 1024 * 1024


@attrs.frozen
class TextReply:
    """A scripted reply of plain text, streamed a word at a time."""

    text: str


@attrs.frozen
class ToolCallReply:
    """A scripted tool call, followed by ``final_text`` once its result comes back.

    Attributes:
        tool_name: The name of one of the tools the request offers, such as
            pi's ``write``.
        arguments: The tool's input, sent as JSON.
        final_text: The text of the reply to the request carrying the tool result.
        tool_call_id: The id the tool result must refer to; generated when empty.
    """

    tool_name: str
    arguments: Mapping[str, Any]
    final_text: str = "done"
    tool_call_id: str = attrs.field(factory=lambda: f"toolu_{random_tokens.token_hex(12)}")


Reply = TextReply | ToolCallReply


@attrs.frozen
class RecordedRequest:
    """One accepted request, without its credential headers.

    Attributes:
        method: The HTTP method.
        path: The request path, with any query string.
        headers: The request headers with lower-case names, except ``x-api-key``
            and ``authorization``.
        body: The parsed JSON body, or None when the body was not JSON.
        reply: The scripted reply the server sent, or None for an error response.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    reply: Reply | None

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the request's last message."""
        if not isinstance(self.body, dict):
            return []
        return _last_tool_results(self.body)


@attrs.define
class _Script:
    """The server's scripted replies and recorded requests, shared by the handler threads."""

    api_key: str
    default_text: str
    model_id: str
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    queue: deque[Reply] = attrs.field(factory=deque)
    pending_tools: dict[str, ToolCallReply] = attrs.field(factory=dict)
    requests: list[RecordedRequest] = attrs.field(factory=list)
    rejected: int = 0

    def key_matches(self, headers: Mapping[str, str]) -> bool:
        offered = headers.get("x-api-key")
        if offered is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            offered = token if scheme.lower() == "bearer" else None
        if offered is None:
            return False
        return hmac.compare_digest(offered.encode(), self.api_key.encode())

    def next_reply(self, body: Any) -> Reply:
        """Pick the reply to ``body``: a tool call's final text, the next scripted one, or the default."""
        with self.lock:
            for result in _last_tool_results(body) if isinstance(body, dict) else []:
                call = self.pending_tools.pop(str(result.get("tool_use_id")), None)
                if call is not None:
                    return TextReply(call.final_text)
            reply = self.queue.popleft() if self.queue else TextReply(self.default_text)
            if isinstance(reply, ToolCallReply):
                self.pending_tools[reply.tool_call_id] = reply
            return reply


def _last_tool_results(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return []
    content = messages[-1].get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict) and block.get("type") == "tool_result"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: each response ends by closing the connection, so a streamed
    # body needs neither a length nor chunked encoding.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("mock model %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        logger.info("mock model has no route for GET %s", self.path)
        self._send_error(HTTPStatus.NOT_FOUND, "not_found_error", f"no route for GET {self.path}")

    def do_POST(self) -> None:
        script = self.server.script
        headers = {name.lower(): value for name, value in self.headers.items()}
        if not script.key_matches(headers):
            with script.lock:
                script.rejected += 1
                rejected = script.rejected
            logger.info(
                "mock model rejected POST %s: wrong or missing key (%d rejected)", self.path, rejected
            )
            self._drain_body()
            self._send_error(HTTPStatus.UNAUTHORIZED, "authentication_error", "invalid x-api-key")
            return

        body = self._read_json()
        if self.path.split("?", 1)[0] != MESSAGES_PATH:
            logger.info("mock model has no route for POST %s", self.path)
            self._record(headers, body, None)
            self._send_error(HTTPStatus.NOT_FOUND, "not_found_error", f"no route for POST {self.path}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            logger.info("mock model rejected POST %s: the body has no messages list", self.path)
            self._record(headers, body, None)
            self._send_error(
                HTTPStatus.BAD_REQUEST,
                "invalid_request_error",
                "the body must be a JSON object with messages",
            )
            return

        reply = script.next_reply(body)
        self._record(headers, body, reply)
        model = str(body.get("model") or script.model_id)
        if body.get("stream"):
            self._stream(reply, model)
        else:
            self._send_json(HTTPStatus.OK, _message(reply, model))

    def _record(self, headers: dict[str, str], body: Any, reply: Reply | None) -> None:
        safe_headers = {name: value for name, value in headers.items() if name not in _CREDENTIAL_HEADERS}
        request = RecordedRequest(
            method=self.command, path=self.path, headers=safe_headers, body=body, reply=reply
        )
        with self.server.script.lock:
            self.server.script.requests.append(request)

    def _content_length(self) -> int:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            return 0
        return max(0, min(length, _MAX_BODY_BYTES))

    def _drain_body(self) -> None:
        self.rfile.read(self._content_length())

    def _read_json(self) -> Any:
        raw = self.rfile.read(self._content_length())
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def _send_json(self, status: HTTPStatus, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: HTTPStatus, kind: str, message: str) -> None:
        self._send_json(status, {"type": "error", "error": {"type": kind, "message": message}})

    def _stream(self, reply: Reply, model: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        for name, data in _stream_events(reply, model):
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], script: _Script) -> None:
        super().__init__(address, _Handler)
        self.script = script


def _message_id() -> str:
    return f"msg_{random_tokens.token_hex(12)}"


def _usage(output_tokens: int) -> dict[str, int]:
    return {"input_tokens": 10, "output_tokens": output_tokens}


def _content_block(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, ToolCallReply):
        return {"type": "tool_use", "id": reply.tool_call_id, "name": reply.tool_name, "input": {}}
    return {"type": "text", "text": ""}


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if isinstance(reply, ToolCallReply) else "end_turn"


def _message(reply: Reply, model: str) -> dict[str, Any]:
    """Return the whole reply as one non-streamed Messages API response."""
    block = _content_block(reply)
    if isinstance(reply, ToolCallReply):
        block["input"] = dict(reply.arguments)
    else:
        block["text"] = reply.text
    return {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(5),
    }


def _chunks(text: str, size: int = 16) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def _stream_events(reply: Reply, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield the server-sent events of a streamed Messages API response, in order."""
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": _message_id(),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(1),
            },
        },
    )
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": _content_block(reply)},
    )
    yield "ping", {"type": "ping"}

    if isinstance(reply, ToolCallReply):
        pieces = _chunks(json.dumps(dict(reply.arguments)))
        delta_type, field = "input_json_delta", "partial_json"
    else:
        # Split after each space, so that a client sees several text deltas.
        words = reply.text.split(" ")
        pieces = [word + " " for word in words[:-1]] + [words[-1]]
        delta_type, field = "text_delta", "text"
    for piece in pieces:
        yield (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, field: piece}},
        )

    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        },
    )
    yield "message_stop", {"type": "message_stop"}


class MockModelServer:
    """A threaded HTTP server on 127.0.0.1 that plays an Anthropic model.

    Args:
        api_key: The only key the server accepts.
        default_text: The reply when no scripted reply is left.
        model_id: The model id `pi_models_config` declares.
        port: The port to bind; 0 picks a free one.
    """

    def __init__(
        self,
        api_key: str,
        *,
        default_text: str = DEFAULT_REPLY,
        model_id: str = MOCK_MODEL_ID,
        port: int = 0,
    ) -> None:
        if not isinstance(api_key, str) or not api_key:
            msg = "api_key must be a non-empty string: the server accepts only requests that carry it"
            raise ValueError(msg)
        self._script = _Script(api_key=api_key, default_text=default_text, model_id=model_id)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = f"at {self.base_url}" if self._server is not None else "stopped"
        return f"<MockModelServer {state}>"

    @property
    def base_url(self) -> str:
        """The server's address, such as ``http://127.0.0.1:40123``, without ``/v1``.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._server is None:
            msg = "the mock model server is not running; call start() or use it in a with block"
            raise RuntimeError(msg)
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def model_id(self) -> str:
        """The model id that `pi_models_config` declares."""
        return self._script.model_id

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests with the right key so far, oldest first, including those answered with 400 or 404."""
        with self._script.lock:
            return list(self._script.requests)

    @property
    def rejected_count(self) -> int:
        """How many requests carried a wrong key or none and got 401."""
        with self._script.lock:
            return self._script.rejected

    def reply_with_text(self, text: str) -> None:
        """Script the reply to the next user turn as plain text."""
        with self._script.lock:
            self._script.queue.append(TextReply(text))

    def reply_with_tool_call(
        self, tool_name: str, arguments: Mapping[str, Any], *, then: str = "done"
    ) -> ToolCallReply:
        """Script a tool call for the next user turn, and the text that follows its result."""
        reply = ToolCallReply(tool_name, dict(arguments), final_text=then)
        with self._script.lock:
            self._script.queue.append(reply)
        return reply

    def pi_models_config(self, provider: str = "anthropic") -> dict[str, Any]:
        """Return a ``models.json`` for pi that routes ``provider`` to this server.

        The file overrides the base URL of pi's built-in ``anthropic`` provider
        and adds this server's model to it. pi then reads the key from
        ``ANTHROPIC_API_KEY``, and lists the provider's models as available only
        while that variable is set. Every model of the provider is sent here,
        never to the real API.
        """
        return {
            "providers": {
                provider: {
                    "baseUrl": self.base_url,
                    "models": [
                        {
                            "id": self._script.model_id,
                            "name": "pi-sandbox mock model",
                            "api": "anthropic-messages",
                            "reasoning": False,
                            "input": ["text"],
                            "contextWindow": 32000,
                            "maxTokens": 4096,
                            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                        }
                    ],
                }
            }
        }

    def start(self) -> Self:
        """Bind 127.0.0.1 and serve requests on a background thread."""
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", self._port), self._script)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pi-sandbox-mock-model", daemon=True
        )
        self._thread.start()
        logger.debug("mock model server listening at %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; calling it twice is harmless."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
