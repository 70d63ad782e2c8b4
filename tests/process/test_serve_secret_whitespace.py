"""`routeway serve` with Secrets whose values end in a newline, as YAML block scalars and files
give them: the upstream gets the bare credential and the client key works.

Before the fix every request to the backend was a 500 (`Bearer sk-…\\n` is a header aiohttp
refuses) and the client key could never match (HTTP strips the header value the gateway sees).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from process_rig import Launch, Upstream

UPSTREAM_KEY = "sk-upstream-PLANTED-77e1"
CLIENT_KEY = "sk-client-PLANTED-42b9"


def manifests(upstream_url: str) -> str:
    return f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelGateway
metadata: {{name: default, namespace: default}}
spec:
  auth: {{apiKeySecretRef: {{name: gateway-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gateway-keys, namespace: default}}
stringData:
  team: |
    {CLIENT_KEY}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key, namespace: default}}
stringData:
  token: |
    {UPSTREAM_KEY}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: upstream, namespace: default}}
spec:
  provider: openai
  url: {upstream_url}
  apiKeySecretRef: {{name: upstream-key, key: token}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: chat, namespace: default}}
spec:
  model: chat
  backends: [{{name: upstream}}]
"""


async def test_block_scalar_secrets_give_bare_credentials(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    (tmp_path / "m.yaml").write_text(manifests(upstream.url))
    upstream.expected_key = UPSTREAM_KEY
    routeway = await launch("serve", "-f", str(tmp_path / "m.yaml"))
    async with aiohttp.ClientSession() as session:
        for headers, status in (
            ({"Authorization": f"Bearer {CLIENT_KEY}"}, 200),
            ({"api-key": CLIENT_KEY}, 200),
            ({"Authorization": f"Bearer {CLIENT_KEY}\\n"}, 401),  # a literal backslash-n is another key
        ):
            async with session.post(
                f"{routeway.url}/v1/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                headers=headers,
            ) as response:
                assert response.status == status, await response.text()
    assert [seen["authorization"] for seen in upstream.seen] == [f"Bearer {UPSTREAM_KEY}"] * 2
    assert UPSTREAM_KEY not in routeway.log() and CLIENT_KEY not in routeway.log()
