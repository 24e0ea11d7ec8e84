"""A host application in brief: store a key, run pi in a sandbox, print its reply.

Set ANTHROPIC_API_KEY. Set ANTHROPIC_BASE_URL to send pi's Anthropic requests
to another server, such as a proxy or a model server on this host.
"""

import json
import os
import tempfile
import uuid
from pathlib import Path

import pi_sandbox

store = pi_sandbox.open_secret_store()
store.put("anthropic", os.environ["ANTHROPIC_API_KEY"], env_var="ANTHROPIC_API_KEY")

mounts = []
base_url = os.environ.get("ANTHROPIC_BASE_URL")
if base_url:
    # pi reads models.json in its agent folder, /data/agent.
    models = Path(tempfile.mkdtemp()) / "models.json"
    models.write_text(json.dumps({"providers": {"anthropic": {"baseUrl": base_url}}}))
    models.chmod(0o644)
    mounts.append(pi_sandbox.Mount(models, "/data/agent/models.json", read_only=True))

provider = pi_sandbox.get_provider()  # $SANDBOX_PROVIDER, else docker
spec = pi_sandbox.SessionSpec(
    session_id=f"example-{uuid.uuid4().hex[:8]}",
    mounts=mounts,
    # Only the host's network reaches a server on the host's 127.0.0.1.
    network="host" if base_url else "bridge",
)
sandbox = provider.create(spec, store.material(names=["anthropic"]))
try:
    with sandbox.attach() as channel:
        channel.send({"type": "prompt", "message": "Say hello in five words."})
        for event in channel:
            if event["type"] == "message_update" and event["assistantMessageEvent"]["type"] == "text_delta":
                print(event["assistantMessageEvent"]["delta"], end="", flush=True)
            elif event["type"] == "message_end" and event["message"].get("errorMessage"):
                raise SystemExit(f"the model request failed: {event['message']['errorMessage']}")
            elif event["type"] == "agent_end":
                print()
                break
finally:
    sandbox.terminate(remove_data=True)
