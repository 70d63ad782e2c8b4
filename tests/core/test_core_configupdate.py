"""The supervisor-to-worker update message (`routeway.configupdate`), without processes.

Matrix: loaded and rejected updates round-trip, and their bytes are canonical (any valid
ProxyConfig with any finite number and any text, any credentials, by property) / the
message's shape is the documented one / a message of another version, kind or shape is
refused naming the field, never quoting a value / credentials stay out of repr and errors /
text UTF-8 cannot carry is escaped where it is for people and refused, by name, where it is a
credential / infinities and NaN, which JSON cannot carry, never enter a resource or a
ProxyConfig. Over real pipes between a supervisor and workers: tests/proxy/test_proxy_relay.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from core_factories import backend
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routeway.configupdate import (
    UPDATE_VERSION,
    ConfigLoaded,
    ConfigRejected,
    UndecodableUpdate,
    UnencodableUpdate,
    decode_update,
    encode_update,
)
from routeway.proxyconfig import ProxyConfig, parse_proxy_config

SECRET = "sk-live-0123456789"
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any valid Unicode
NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
NUMBERS = st.floats(allow_nan=False, allow_infinity=False)  # ProxyConfig holds finite ones only
COUNTS = st.integers(0, 2**53)


@st.composite
def proxy_configs(draw: Any) -> ProxyConfig:
    """Any valid ProxyConfig: every optional field present or not, numbers and text at will."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    optional = lambda strategy: draw(st.one_of(st.none(), strategy))  # noqa: E731

    def target() -> dict[str, Any]:
        return {"backend": f"ns/{draw(st.sampled_from(names))}", "model": draw(TEXT), "weight": draw(COUNTS)}

    backends = [
        {
            "id": f"ns/{name}",
            "namespace": "ns",
            "name": name,
            "provider": draw(st.sampled_from(["openai", "mock"])),
            "url": optional(st.just(f"http://{name}.ml.svc:8000/v1")),
            "version": optional(TEXT),
            "credentialRef": optional(st.just(f"ns/keys/{name}")),
            "timeouts": {
                "connect": draw(NUMBERS),
                "firstByte": draw(NUMBERS),
                "idle": draw(NUMBERS),
                "total": optional(NUMBERS),
            },
            "maxConcurrency": optional(COUNTS),
            "queueTimeout": draw(NUMBERS),
            "outlierDetection": {
                "consecutiveFailures": draw(COUNTS),
                "baseEjection": draw(NUMBERS),
                "maxEjection": draw(NUMBERS),
            },
            "mock": optional(
                st.fixed_dictionaries(
                    {
                        "latency": NUMBERS,
                        "tokensPerSecond": NUMBERS,
                        "errorRate": NUMBERS,
                        "maxTokens": COUNTS,
                    }
                )
            ),
        }
        for name in names
    ]
    routes = [
        {
            "id": f"ns/r{i}",
            "namespace": "ns",
            "name": f"r{i}",
            "model": draw(TEXT),
            "generation": optional(COUNTS),
            "targets": [target() for _ in range(draw(st.integers(1, 3)))],
            "fallbacks": [target() for _ in range(draw(st.integers(0, 2)))],
            "retries": {
                "attempts": draw(COUNTS),
                "retryOn": draw(st.lists(st.sampled_from(["connect-failure", "timeout", "5xx", "429"]))),
                "backoffBase": draw(NUMBERS),
                "backoffMax": draw(NUMBERS),
            },
            "timeout": optional(NUMBERS),
            "stickyHeader": optional(TEXT),
        }
        for i in range(draw(st.integers(0, 4)))
    ]
    gateway = {
        "namespace": "ns",
        "name": "gw",
        "maxBodyBytes": draw(COUNTS),
        "clientKeyRefs": [f"ns/keys/{n}" for n in draw(st.lists(NAMES, max_size=2))],
        "requireClientKey": draw(st.booleans()),
    }
    doc = {"schemaVersion": 1, "gateway": gateway, "backends": backends, "routes": routes}
    return parse_proxy_config(doc).with_revision()


CREDENTIALS = st.dictionaries(st.from_regex(r"[a-z]{1,5}/[a-z]{1,5}/[a-z.]{1,5}", fullmatch=True), TEXT)
LOADED = st.builds(ConfigLoaded, proxy_configs(), CREDENTIALS, TEXT, st.lists(TEXT, max_size=3).map(tuple))
REJECTED = st.builds(ConfigRejected, TEXT, st.lists(TEXT, max_size=3).map(tuple))


def small_config() -> ProxyConfig:
    return parse_proxy_config(
        {
            "schemaVersion": 1,
            "gateway": {"namespace": "ns", "name": "gw", "maxBodyBytes": 1000},
            "backends": [
                {
                    "id": "ns/b",
                    "namespace": "ns",
                    "name": "b",
                    "provider": "openai",
                    "url": "http://b:8000/v1",
                    "credentialRef": "ns/keys/b",
                    "timeouts": {"connect": 1.0, "firstByte": 0.1, "idle": 2.5},
                    "queueTimeout": 0.0,
                    "outlierDetection": {"consecutiveFailures": 3, "baseEjection": 10, "maxEjection": 60},
                }
            ],
        }
    ).with_revision()


@settings(max_examples=80, deadline=None)
@given(st.one_of(LOADED, REJECTED))
def test_any_update_round_trips_and_its_bytes_are_canonical(update: ConfigLoaded | ConfigRejected) -> None:
    payload = encode_update(update)
    assert decode_update(payload) == update
    assert encode_update(decode_update(payload)) == payload


def test_the_message_is_the_documented_document() -> None:
    config = small_config()
    loaded = orjson.loads(encode_update(ConfigLoaded(config, {"ns/keys/b": SECRET}, "files", ("w",))))
    assert loaded == {
        "kind": "ConfigLoaded",
        "version": UPDATE_VERSION,
        "source": "files",
        "warnings": ["w"],
        "credentials": {"ns/keys/b": SECRET},
        "config": config.to_document(),  # the very document the operator stores
    }
    rejected = orjson.loads(encode_update(ConfigRejected("files", ("bad", "worse"))))
    assert rejected == {
        "kind": "ConfigRejected",
        "version": UPDATE_VERSION,
        "source": "files",
        "errors": ["bad", "worse"],
    }


def test_equal_updates_are_equal_bytes() -> None:
    a = ConfigLoaded(small_config(), {"a/b/c": "1", "x/y/z": "2"}, "s")
    b = ConfigLoaded(small_config(), {"x/y/z": "2", "a/b/c": "1"}, "s")
    assert encode_update(a) == encode_update(b)


def test_credentials_stay_out_of_repr() -> None:
    update = ConfigLoaded(small_config(), {"ns/keys/b": SECRET}, "files")
    assert SECRET not in repr(update) and SECRET not in str(update)


def loaded_document(**changes: Any) -> dict[str, Any]:
    doc = orjson.loads(encode_update(ConfigLoaded(small_config(), {"ns/keys/b": SECRET}, "files")))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x04pickled", "not JSON"),
        (b"[]", "not a JSON object"),
        (orjson.dumps(loaded_document(version=2)), "version 2"),
        (orjson.dumps(loaded_document(version=None)), "version None"),
        (orjson.dumps(loaded_document(kind="ConfigDeleted")), "kind 'ConfigDeleted'"),
        (orjson.dumps(loaded_document(source=None)), "'source'"),
        (orjson.dumps(loaded_document(warnings="w")), "'warnings'"),
        (orjson.dumps(loaded_document(credentials=[SECRET])), "'credentials'"),
        (orjson.dumps(loaded_document(credentials={"ns/keys/b": 7})), "'credentials'"),
        (orjson.dumps(loaded_document(config=None)), "'config'"),
        (orjson.dumps(loaded_document(config={"schemaVersion": 2})), "schemaVersion 2"),
        (orjson.dumps({"kind": "ConfigRejected", "version": UPDATE_VERSION, "source": "s"}), "'errors'"),
    ],
)
def test_a_message_of_another_shape_is_refused_by_field(payload: bytes, message: str) -> None:
    with pytest.raises(UndecodableUpdate, match=message) as caught:
        decode_update(payload)
    assert SECRET not in str(caught.value)


def test_an_invalid_config_is_refused_without_quoting_it() -> None:
    doc = loaded_document()
    doc["config"]["backends"][0]["url"] = {"leaked": SECRET}  # a value where a string belongs
    with pytest.raises(UndecodableUpdate, match=r"\('backends', 0, 'url'\)") as caught:
        decode_update(orjson.dumps(doc))
    assert SECRET not in str(caught.value)


def test_text_for_people_is_escaped_and_a_credential_is_refused_by_name() -> None:
    odd = "manifests/caf\udce9.yaml"  # a file name whose bytes are not UTF-8 (surrogateescape)
    decoded = decode_update(encode_update(ConfigRejected(odd, (f"{odd}: broken",))))
    assert decoded == ConfigRejected("manifests/caf\\udce9.yaml", ("manifests/caf\\udce9.yaml: broken",))
    loaded = decode_update(encode_update(ConfigLoaded(small_config(), {}, odd, (odd,))))
    assert (
        isinstance(loaded, ConfigLoaded)
        and loaded.source == loaded.warnings[0] == "manifests/caf\\udce9.yaml"
    )
    with pytest.raises(UnencodableUpdate, match="credential ns/keys/b ") as caught:
        encode_update(ConfigLoaded(small_config(), {"ns/keys/b": f"{SECRET}\udce9"}, "files"))
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_numbers_json_cannot_carry_are_refused_where_they_enter(number: float) -> None:
    """JSON would turn them into null on the way to a worker (or into a ConfigMap), so neither
    a resource (local mode reads YAML's .inf) nor a ProxyConfig may hold them."""
    with pytest.raises(ValidationError, match="finite number"):
        backend("b", provider="mock", url=None, mock={"tokensPerSecond": number})
    doc = small_config().to_document()
    doc["backends"][0]["timeouts"]["connect"] = number
    with pytest.raises(ValidationError, match="finite number"):
        parse_proxy_config(doc)
