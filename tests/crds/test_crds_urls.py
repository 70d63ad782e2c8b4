"""URLs in the resources carry no credential and nothing that breaks the upstream path (issue 14
item 11), checked at each layer on its own, since the agreement table (test_crds_agreement)
passes as long as any one layer rejects:

- the CRD's `pattern` alone (an API server without CEL, or CEL rules dropped by a tool);
- pydantic's message, which must say where the credential goes instead (apiKeySecretRef,
  passwordSecretRef) and never repeat the URL it rejects (it may hold the key);
- the backend URL as `routeway render` turns it into the ProxyConfig: unchanged, so a URL that
  passes validation is exactly what the proxy joins paths to.

Matrix: backend url and gateway Redis url x userinfo (user and password, user only, password
only), query (with and without a path, empty), fragment; plus URLs that must stay valid (an
`@` or `:` in the path, no path, a port, a database number).
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest

from routeway.resources import ModelBackend, ModelGateway

BAD_BACKEND_URLS = [
    ("http://user:sk-planted-1@vllm:8000/v1", "apiKeySecretRef"),
    ("https://sk-planted-1@api.example/v1", "apiKeySecretRef"),
    ("http://:sk-planted-1@vllm", "apiKeySecretRef"),
    ("http://vllm:8000/v1?api_key=sk-planted-1", "query string"),
    ("http://vllm:8000?key=sk-planted-1", "query string"),
    ("http://vllm:8000/v1?", "query string"),
    ("http://vllm:8000/v1#sk-planted-1", "fragment"),
]
GOOD_BACKEND_URLS = ["http://vllm:8000/v1", "https://api.example", "https://api.example/v1/team@ml:8"]
BAD_REDIS_URLS = [
    "redis://:sk-planted-1@redis:6379",
    "redis://default:sk-planted-1@redis:6379/0",
    "rediss://redis:6380/0?password=sk-planted-1",
    "redis://redis:6379#sk-planted-1",
]
GOOD_REDIS_URLS = ["redis://redis:6379", "rediss://redis.ml.svc:6380/15"]


def _url_pattern(crd: dict[str, Any], *path: str) -> str:
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    pattern: str = node["pattern"]
    return pattern


@pytest.mark.parametrize("url", [u for u, _ in BAD_BACKEND_URLS] + GOOD_BACKEND_URLS)
def test_backend_url_pattern_alone(url: str, crds_by_kind: dict[str, dict[str, Any]]) -> None:
    pattern = _url_pattern(crds_by_kind["ModelBackend"], "url")
    assert (re.search(pattern, url) is not None) == (url in GOOD_BACKEND_URLS)


@pytest.mark.parametrize("url", BAD_REDIS_URLS + GOOD_REDIS_URLS)
def test_redis_url_pattern_alone(url: str, crds_by_kind: dict[str, dict[str, Any]]) -> None:
    pattern = _url_pattern(crds_by_kind["ModelGateway"], "limits", "redis", "url")
    assert (re.search(pattern, url) is not None) == (url in GOOD_REDIS_URLS)


def _backend(url: str) -> ModelBackend:
    return ModelBackend.model_validate(
        {"metadata": {"name": "b", "namespace": "ml"}, "spec": {"provider": "openai", "url": url}}
    )


@pytest.mark.parametrize(("url", "says"), BAD_BACKEND_URLS)
def test_backend_url_message_points_at_the_secret_ref(url: str, says: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        _backend(url)
    messages = [e["msg"] for e in caught.value.errors(include_url=False, include_input=False)]
    assert len(messages) == 1
    assert says in messages[0] and "apiKeySecretRef" in messages[0]
    assert "sk-planted-1" not in messages[0]


@pytest.mark.parametrize("url", BAD_REDIS_URLS)
def test_redis_url_message_points_at_password_secret_ref(url: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ModelGateway.model_validate({"metadata": {"name": "gw"}, "spec": {"limits": {"redis": {"url": url}}}})
    messages = [e["msg"] for e in caught.value.errors(include_url=False, include_input=False)]
    assert len(messages) == 1
    assert "passwordSecretRef" in messages[0]
    assert "sk-planted-1" not in messages[0]


@pytest.mark.parametrize("url", GOOD_BACKEND_URLS)
def test_valid_backend_url_is_kept_as_written(url: str) -> None:
    assert _backend(url).spec.url == url
