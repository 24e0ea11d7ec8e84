"""The mock model server on its own, spoken to over HTTP from this process."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from pi_sandbox.testing.mock_model import DEFAULT_REPLY, MOCK_MODEL_ID, MockModelServer

KEY = "mock-test-key"


@pytest.fixture
def server() -> Iterator[MockModelServer]:
    with MockModelServer(api_key=KEY) as running:
        yield running


def _post(
    server: MockModelServer,
    body: dict[str, Any] | bytes,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/v1/messages",
) -> tuple[int, bytes]:
    """POST ``body`` with the right key, unless ``headers`` replace it, and return status and body."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    address = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        all_headers = {"content-type": "application/json", "x-api-key": KEY, **(headers or {})}
        connection.request("POST", path, body=data, headers={k: v for k, v in all_headers.items() if v})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Parse a server-sent event stream into (event name, data) pairs."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def _user_turn(text: str = "hello", *, stream: bool = True) -> dict[str, Any]:
    return {
        "model": MOCK_MODEL_ID,
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }


def _streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(
        data["delta"]["text"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "text_delta"
    )


class TestKeyCheck:
    def test_wrong_key_gets_401(self, server: MockModelServer) -> None:
        """A wrong key gets 401 with an Anthropic-style JSON error, and is counted, not recorded."""
        status, body = _post(server, _user_turn(), headers={"x-api-key": "wrong"})

        assert status == 401
        error = json.loads(body)
        assert error["type"] == "error"
        assert error["error"]["type"] == "authentication_error"
        assert server.rejected_count == 1
        assert server.requests == []

    def test_missing_key_gets_401(self, server: MockModelServer) -> None:
        """A request without any key is rejected (an empty header value means the header is left out)."""
        status, _ = _post(server, _user_turn(), headers={"x-api-key": ""})

        assert status == 401
        assert server.rejected_count == 1

    def test_bearer_token_accepted(self, server: MockModelServer) -> None:
        """The key is also accepted as an Authorization bearer token."""
        status, _ = _post(server, _user_turn(), headers={"x-api-key": "", "authorization": f"Bearer {KEY}"})

        assert status == 200
        assert server.rejected_count == 0
        assert len(server.requests) == 1

    def test_recorded_request_omits_credentials(self, server: MockModelServer) -> None:
        """Recorded requests keep the other headers and the body, never the key headers."""
        _post(server, _user_turn("record me"), headers={"authorization": "Bearer other", "x-extra": "1"})

        recorded = server.requests[0]
        assert "x-api-key" not in recorded.headers
        assert "authorization" not in recorded.headers
        assert recorded.headers["x-extra"] == "1"
        assert recorded.body["messages"][0]["content"] == "record me"
        assert KEY not in repr(recorded)

    def test_empty_key_rejected(self) -> None:
        """A server without a key to check is refused at construction."""
        with pytest.raises(ValueError, match="api_key"):
            MockModelServer(api_key="")


class TestReplies:
    def test_streams_default_text(self, server: MockModelServer) -> None:
        """With nothing scripted, the reply is the default text, streamed as Messages API events."""
        status, raw = _post(server, _user_turn())

        assert status == 200
        events = _events(raw)
        names = [name for name, _ in events]
        assert names[0] == "message_start"
        assert names[-2:] == ["message_delta", "message_stop"]
        assert names.count("content_block_delta") > 1
        assert _streamed_text(events) == DEFAULT_REPLY
        assert events[-2][1]["delta"]["stop_reason"] == "end_turn"

    def test_scripted_texts_in_order(self, server: MockModelServer) -> None:
        """Scripted texts reply to successive user turns in order, then the default text resumes."""
        server.reply_with_text("first")
        server.reply_with_text("second reply")

        texts = [_streamed_text(_events(_post(server, _user_turn())[1])) for _ in range(3)]

        assert texts == ["first", "second reply", DEFAULT_REPLY]

    def test_tool_call_then_final_text(self, server: MockModelServer) -> None:
        """A scripted tool call streams its input; the request with its result gets the final text."""
        arguments = {"path": "a.txt", "content": "line one\nline two\n"}
        call = server.reply_with_tool_call("write", arguments, then="written")

        events = _events(_post(server, _user_turn("write it"))[1])
        block = next(data["content_block"] for name, data in events if name == "content_block_start")
        partial = "".join(
            data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
        )
        follow_up = _user_turn("write it")
        follow_up["messages"] += [
            {"role": "assistant", "content": [{**block, "input": arguments}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.tool_call_id, "content": "ok"}],
            },
        ]
        final = _streamed_text(_events(_post(server, follow_up)[1]))

        assert block["type"] == "tool_use"
        assert block["name"] == "write"
        assert block["id"] == call.tool_call_id
        assert json.loads(partial) == arguments
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        assert final == "written"
        assert server.requests[1].tool_results[0]["tool_use_id"] == call.tool_call_id

    def test_non_streaming_reply(self, server: MockModelServer) -> None:
        """Without stream, the reply is one JSON message."""
        status, body = _post(server, _user_turn(stream=False))

        message = json.loads(body)
        assert status == 200
        assert message["type"] == "message"
        assert message["content"] == [{"type": "text", "text": DEFAULT_REPLY}]
        assert message["stop_reason"] == "end_turn"

    def test_unknown_path_gets_404(self, server: MockModelServer) -> None:
        """Paths other than /v1/messages get 404, even with the right key."""
        status, body = _post(server, _user_turn(), path="/v1/complete")

        assert status == 404
        assert json.loads(body)["error"]["type"] == "not_found_error"

    def test_body_without_messages_gets_400(self, server: MockModelServer) -> None:
        """A body that is not a Messages API request gets 400."""
        status, _ = _post(server, b"not json")

        assert status == 400


class TestLifecycle:
    def test_base_url_needs_running_server(self) -> None:
        """base_url raises before start and after stop; stop twice is harmless."""
        server = MockModelServer(api_key=KEY)

        with pytest.raises(RuntimeError, match="not running"):
            _ = server.base_url
        server.start()
        assert server.base_url.startswith("http://127.0.0.1:")
        server.stop()
        server.stop()
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.base_url

    def test_pi_models_config_points_at_server(self, server: MockModelServer) -> None:
        """The models.json routes the anthropic provider to the server and adds the mock model."""
        config = server.pi_models_config()

        provider = config["providers"]["anthropic"]
        assert provider["baseUrl"] == server.base_url
        assert "apiKey" not in provider
        assert [model["id"] for model in provider["models"]] == [MOCK_MODEL_ID]
        assert provider["models"][0]["api"] == "anthropic-messages"
