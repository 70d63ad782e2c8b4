"""A credential's surrounding whitespace is not part of it, however the Secret holds it.

Found beside the client-key tests (issue 14): a Secret written with a YAML block scalar or
made from a file (`kubectl create secret --from-file`) holds the key with a trailing newline.
The cluster path (`data`, base64) dropped it but `stringData` — what `routeway serve` reads
from files — kept it, so in local mode a backend credential became `Bearer sk-…\n`, a header
aiohttp refuses (every request to that backend a 500), and a client key could never match (HTTP
strips a header value's surrounding whitespace before the gateway sees it). Matrix: backend
credential and client key, in `stringData` and `data`, with a newline, CRLF, spaces and tabs
around: all resolve to the same value (the client key to the hash of the bare key), and a space
inside a value is kept.
"""

from __future__ import annotations

import base64

import pytest

from routeway.credentials import hash_client_key, resolve_credentials, secret_value
from routeway.proxyconfig import BackendConfig, GatewayConfig, ProxyConfig
from routeway.resources import Secret

WRAPPED = ["sk-abc\n", "sk-abc\r\n", "  sk-abc \t", "\nsk-abc\n\n"]


def secret(**fields: dict[str, str]) -> Secret:
    return Secret.model_validate(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}, **fields}
    )


@pytest.mark.parametrize("value", WRAPPED)
def test_string_data_and_data_give_the_bare_value(value: str) -> None:
    as_string = secret(stringData={"k": value})
    as_data = secret(data={"k": base64.b64encode(value.encode()).decode()})
    assert secret_value(as_string, "k") == secret_value(as_data, "k") == "sk-abc"


def test_whitespace_inside_a_value_is_kept() -> None:
    assert secret_value(secret(stringData={"k": " two words \n"}), "k") == "two words"


@pytest.mark.parametrize("value", WRAPPED)
def test_resolved_credentials_hold_the_bare_key_and_its_hash(value: str) -> None:
    backend = BackendConfig.model_validate(
        {
            "id": "ns/b",
            "namespace": "ns",
            "name": "b",
            "provider": "openai",
            "url": "http://up:8000/v1",
            "credentialRef": "ns/s/upstream",
            "timeouts": {"connect": 1, "firstByte": 2, "idle": 3},
            "queueTimeout": 0,
            "outlierDetection": {"consecutiveFailures": 1, "baseEjection": 1, "maxEjection": 2},
        }
    )
    gateway = GatewayConfig.model_validate(
        {"namespace": "ns", "name": "gw", "maxBodyBytes": 1000, "clientKeyRefs": ["ns/s/client"]}
    )
    config = ProxyConfig(gateway=gateway, backends=(backend,))
    stored = secret(stringData={"upstream": value, "client": value.replace("abc", "client")})
    resolved = resolve_credentials(config, lambda ns, name, key: secret_value(stored, key))
    assert resolved == {"ns/s/upstream": "sk-abc", "ns/s/client": hash_client_key("sk-client")}
