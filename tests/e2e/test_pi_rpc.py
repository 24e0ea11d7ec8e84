"""The real pi in a Docker sandbox, with a key from a real store, talking to the mock model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import docker
import pytest
from e2e_helpers import KEY_ENV_VAR, PiSession, assert_absent

from pi_sandbox.testing.mock_model import DEFAULT_REPLY, MockModelServer

pytestmark = pytest.mark.integration


def _assistant_messages(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        event["message"]
        for event in events
        if event.get("type") == "message_end" and event["message"].get("role") == "assistant"
    ]


def _text(message: dict[str, Any]) -> str:
    return "".join(block["text"] for block in message["content"] if block.get("type") == "text")


class TestRpcState:
    def test_get_state_reports_mock_model(self, pi: PiSession, model_server: MockModelServer) -> None:
        """get_state names the mock model of the anthropic provider, at the mock's address."""
        response = pi.request({"type": "get_state"})

        assert response["success"] is True
        assert response["command"] == "get_state"
        model = response["data"]["model"]
        assert model["provider"] == "anthropic"
        assert model["id"] == model_server.model_id
        assert model["baseUrl"] == model_server.base_url
        assert response["data"]["isStreaming"] is False
        assert response["data"]["messageCount"] == 0

    def test_available_models_include_key_provider(
        self, pi: PiSession, model_server: MockModelServer
    ) -> None:
        """With the stored key, pi lists the anthropic models, the mock model among them."""
        response = pi.request({"type": "get_available_models"})

        assert response["success"] is True
        models = response["data"]["models"]
        anthropic = [model for model in models if model["provider"] == "anthropic"]
        assert len(anthropic) > 1
        assert model_server.model_id in {model["id"] for model in anthropic}

    def test_available_models_without_key(self, start_pi: Callable[..., PiSession]) -> None:
        """Without the key, pi lists no anthropic model: the key is what makes the provider live."""
        pi = start_pi(secrets={}, network="none")

        response = pi.request({"type": "get_available_models"})

        assert response["success"] is True
        providers = {model["provider"] for model in response["data"]["models"]}
        assert "anthropic" not in providers


class TestKeyStaysOut:
    def test_key_absent_from_inspect(self, pi: PiSession, engine: docker.DockerClient, api_key: str) -> None:
        """The key is nowhere in the container's inspect JSON, and its variable is not set there."""
        pi.request({"type": "get_state"})

        inspected = engine.api.inspect_container(pi.sandbox.container_id)

        assert_absent(api_key, json.dumps(inspected), "docker inspect")
        names = {entry.split("=", 1)[0] for entry in inspected["Config"]["Env"]}
        assert KEY_ENV_VAR not in names
        assert_absent(api_key, json.dumps(inspected["Config"]["Labels"]), "the labels")

    def test_key_absent_from_logs_and_agent_dir(
        self, pi: PiSession, engine: docker.DockerClient, api_key: str
    ) -> None:
        """After a prompt, neither the engine's raw log nor pi's agent folder contains the key."""
        pi.prompt("ping")

        raw_log = engine.api.logs(pi.sandbox.container_id, stdout=True, stderr=True)
        assert raw_log
        assert_absent(api_key, raw_log.decode("utf-8", "replace"), "the container's log")
        files = [path for path in pi.agent_dir.rglob("*") if path.is_file()]
        assert any(path.suffix == ".jsonl" for path in files)
        for path in files:
            assert_absent(api_key, path.read_text(errors="replace"), f"the agent folder's {path.name}")


class TestPrompt:
    def test_prompt_round_trip(self, pi: PiSession, model_server: MockModelServer) -> None:
        """A prompt reaches the mock with the stored key, and pi relays the streamed reply as events."""
        response, events = pi.prompt("ping")

        assert response["success"] is True
        types = [event["type"] for event in events]
        for expected in ("agent_start", "turn_start", "message_start", "message_update", "turn_end"):
            assert expected in types
        assert types[-1] == "agent_end"
        deltas = [
            event["assistantMessageEvent"]["delta"]
            for event in events
            if event["type"] == "message_update" and event["assistantMessageEvent"]["type"] == "text_delta"
        ]
        assert len(deltas) > 1
        assert "".join(deltas) == DEFAULT_REPLY
        replies = _assistant_messages(events)
        assert len(replies) == 1
        assert _text(replies[0]) == DEFAULT_REPLY
        assert replies[0]["stopReason"] == "stop"

    def test_mock_saw_only_stored_key(self, pi: PiSession, model_server: MockModelServer) -> None:
        """The mock accepted one request, which only the stored key passes, and rejected none."""
        pi.prompt("ping")

        assert model_server.rejected_count == 0
        assert len(model_server.requests) == 1
        request = model_server.requests[0]
        assert request.path == "/v1/messages"
        assert request.body["model"] == model_server.model_id
        assert request.body["stream"] is True
        assert request.body["messages"][-1]["content"][0]["text"] == "ping"
        assert "x-api-key" not in request.headers

    def test_tool_call_writes_workspace_file(self, pi: PiSession, model_server: MockModelServer) -> None:
        """A write tool call from the model creates the file in the host's workspace folder."""
        content = "written by pi in the sandbox\nsecond line\n"
        call = model_server.reply_with_tool_call(
            "write", {"path": "notes/hello.txt", "content": content}, then="the file is written"
        )

        response, events = pi.prompt("write the notes file")

        assert response["success"] is True
        assert (pi.workspace / "notes" / "hello.txt").read_text() == content
        ends = [event for event in events if event["type"] == "tool_execution_end"]
        assert len(ends) == 1
        assert ends[0]["toolName"] == "write"
        assert ends[0]["toolCallId"] == call.tool_call_id
        assert ends[0]["isError"] is False
        assert _text(_assistant_messages(events)[-1]) == "the file is written"
        requests = model_server.requests
        assert len(requests) == 2
        assert [result["tool_use_id"] for result in requests[1].tool_results] == [call.tool_call_id]
        assert model_server.rejected_count == 0

    def test_wrong_key_gets_401(
        self, start_pi: Callable[..., PiSession], model_server: MockModelServer
    ) -> None:
        """A sandbox with another key gets 401 from the mock, and pi reports the failed request."""
        pi = start_pi(secrets={KEY_ENV_VAR: "not-the-stored-key"})

        response, events = pi.prompt("ping")

        assert response["success"] is True
        replies = _assistant_messages(events)
        assert replies[-1]["stopReason"] == "error"
        assert "401" in replies[-1]["errorMessage"]
        assert model_server.rejected_count >= 1
        assert model_server.requests == []
