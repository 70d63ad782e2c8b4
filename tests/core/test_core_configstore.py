"""The ConfigMap storage format (`routeway.configstore`), without an API server.

Matrix: inline and sharded configs round-trip (examples, and any bytes at any budget by
property) / the manifest text is the one previous releases wrote and read / a shard set
changed or lost under the reader is torn (retry), a manifest no operator writes is invalid
(no retry) / too large a config is refused / the Role's object names cover every shard /
the lenient manifest readers the operator uses / the credentials Secret round-trips and skips
bad entries by key. The same format against the emulated API server, with the real operator
writing and the proxy reading: tests/operator/test_operator_kube_source.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from routeway.configstore import (
    CONFIG_KEY,
    MANIFEST_KEY,
    MAX_SHARDS,
    SHARD_KEY,
    SLOTS,
    ConfigTooLarge,
    EncodedConfig,
    InvalidManifest,
    TornConfig,
    config_object_names,
    decode_config,
    decode_credentials,
    encode_config,
    encode_credentials,
    manifest_shards,
    manifest_slot,
    shards_to_read,
)

BODY = json.dumps({"x": [str(i) * 20 for i in range(2000)]}).encode()


def stored(encoded: EncodedConfig) -> dict[str, dict[str, str] | None]:
    """The shard ConfigMaps' binaryData by name, as a reader would fetch them."""
    return {name: binary for name, binary in encoded.shards}


def roundtrip(encoded: EncodedConfig) -> bytes:
    shards = stored(encoded)
    return decode_config(encoded.data, {n: shards.get(n) for n in shards_to_read(encoded.data)})


def with_manifest(encoded: EncodedConfig, **changes: object) -> dict[str, str]:
    manifest = json.loads(encoded.data[MANIFEST_KEY])
    manifest.update(changes)
    return {MANIFEST_KEY: json.dumps(manifest)}


def test_small_configs_stay_readable_inline() -> None:
    encoded = encode_config(b'{"a": 1}', "rev", "cm")
    assert encoded.data == {CONFIG_KEY: '{"a": 1}'} and not encoded.shards and encoded.slot is None
    assert shards_to_read(encoded.data) == ()
    assert decode_config(encoded.data, {}) == b'{"a": 1}'


def test_large_configs_are_sharded_in_the_slot_asked_for() -> None:
    for slot in SLOTS:
        encoded = encode_config(BODY, "rev", "cm", slot=slot, budget=1000)
        names = [name for name, _ in encoded.shards]
        assert encoded.slot == slot and len(names) > 1
        assert names == [f"cm-{slot}{i}" for i in range(len(names))]
        assert shards_to_read(encoded.data) == tuple(names)
        assert roundtrip(encoded) == BODY
        assert all(len(binary[SHARD_KEY]) <= 1000 for _, binary in encoded.shards)


def test_the_manifest_is_the_text_previous_releases_wrote() -> None:
    """Proxies and operators of the last release read and compare this text: unchanged, an
    upgraded operator rewrites nothing and an older proxy still reads what it writes."""
    encoded = encode_config(b"[" + b"1," * 600 + b"1]", "rev-1", "cm", slot="b", budget=1000)
    (name, binary), *_ = encoded.shards
    compressed = base64.b64decode(binary[SHARD_KEY])
    assert name == "cm-b0"
    assert encoded.data == {
        MANIFEST_KEY: (
            '{"encoding": "gzip", "revision": "rev-1", "sha256": "'
            + hashlib.sha256(compressed).hexdigest()
            + '", "shards": ["cm-b0"], "size": 1203, "slot": "b"}'
        )
    }


def make_body(noisy: bool, size: int, seed: int) -> bytes:
    """`size` bytes of JSON-like text that compresses well, or of base64 of random bytes that
    hardly does (more shards). Drawn from a seed: Hypothesis draws at most 8 KiB itself."""
    rng = random.Random(seed)
    if noisy:
        return base64.b64encode(rng.randbytes(size))[:size]
    return "".join(rng.choices('{}[]":,abc0123 ', k=size)).encode()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.builds(make_body, st.booleans(), st.integers(0, 20_000), st.integers(0, 2**32)),
    budget=st.integers(16, 4096),
    slot=st.sampled_from(SLOTS),
)
def test_any_body_round_trips_at_any_budget(body: bytes, budget: int, slot: str) -> None:
    try:
        encoded = encode_config(body, "rev", "cm", slot=slot, budget=budget)
    except ConfigTooLarge:
        assert len(body) > budget  # only sharding can run out of shards
        event("too large")
        return
    assert roundtrip(encoded) == body
    if len(body) <= budget:
        event("inline")
        assert encoded.data == {CONFIG_KEY: body.decode()} and not encoded.shards
    else:
        event("sharded")
        assert 1 <= len(encoded.shards) <= MAX_SHARDS and manifest_slot(encoded.data) == slot
        assert manifest_shards(encoded.data) <= set(config_object_names("cm"))


def test_a_shard_set_changed_or_lost_under_the_reader_is_torn() -> None:
    a = encode_config(BODY, "rev-a", "cm", slot="a", budget=1000)
    b = encode_config(BODY.replace(b"1", b"7"), "rev-b", "cm", slot="a", budget=1000)
    shards = stored(a)
    assert decode_config(a.data, shards) == BODY
    shards[b.shards[0][0]] = b.shards[0][1]  # overwritten under the reader
    with pytest.raises(TornConfig, match="checksum"):
        decode_config(a.data, shards)
    shards = stored(a)
    del shards[a.shards[1][0]]  # deleted under the reader
    with pytest.raises(TornConfig, match="missing"):
        decode_config(a.data, shards)
    shards = stored(a) | {a.shards[-1][0]: None}  # fetched: not found
    with pytest.raises(TornConfig, match="missing"):
        decode_config(a.data, shards)
    shards = stored(a) | {a.shards[0][0]: {SHARD_KEY: "not base64!"}}
    with pytest.raises(TornConfig, match="base64"):
        decode_config(a.data, shards)
    dropped = with_manifest(a, shards=[name for name, _ in a.shards][:-1])  # a shard left out
    with pytest.raises(TornConfig, match="checksum"):
        decode_config(dropped, stored(a))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoding": "zstd"}, "unsupported config encoding 'zstd'"),
        ({"shards": []}, "shards"),
        ({"shards": [f"cm-a{i}" for i in range(MAX_SHARDS + 1)]}, "shards"),
        ({"shards": "cm-a0"}, "shards"),
        ({"sha256": "abc"}, "sha256"),
        ({"slot": "c"}, "slot"),
        ({"revision": None}, "revision"),
        ({"size": -1}, "size"),
        ({"size": 12}, "says 12 bytes"),  # the checksum matches, the manifest is wrong
    ],
)
def test_a_manifest_no_operator_writes_is_invalid_not_torn(changes: dict[str, object], message: str) -> None:
    encoded = encode_config(BODY, "rev", "cm", budget=1000)
    data = with_manifest(encoded, **changes)
    with pytest.raises(InvalidManifest, match=message):
        decode_config(data, stored(encoded))


@pytest.mark.parametrize(
    "data",
    [{}, {"other": "x"}, {MANIFEST_KEY: "{not json"}, {MANIFEST_KEY: "[]"}],
    ids=["empty", "neither-key", "manifest-not-json", "manifest-not-object"],
)
def test_data_without_a_config_is_refused(data: dict[str, str]) -> None:
    with pytest.raises(ValueError) as caught:
        shards_to_read(data)
    assert not isinstance(caught.value, TornConfig)
    with pytest.raises(ValueError):
        decode_config(data, {})


def test_a_config_needing_too_many_shards_is_refused() -> None:
    with pytest.raises(ConfigTooLarge, match=f"at most {MAX_SHARDS}"):
        encode_config(os.urandom(20_000), "rev", "cm", budget=1000)


def test_the_role_names_every_object_a_proxy_may_read() -> None:
    names = config_object_names("cm")
    assert names[0] == "cm" and len(names) == 1 + len(SLOTS) * MAX_SHARDS == len(set(names))
    assert {f"cm-{slot}{i}" for slot in SLOTS for i in range(MAX_SHARDS)} <= set(names)


def test_lenient_readers_of_the_live_configmap() -> None:
    encoded = encode_config(BODY, "rev", "cm", slot="b", budget=1000)
    assert manifest_slot(encoded.data) == "b"
    assert manifest_shards(encoded.data) == {name for name, _ in encoded.shards}
    for data in (None, {}, {CONFIG_KEY: "{}"}, {MANIFEST_KEY: "{not json"}):
        assert manifest_slot(data) is None and manifest_shards(data) == frozenset()


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9-]{1,12}/[a-z0-9.-]{1,12}/[A-Za-z0-9._/-]{1,20}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=50),
        max_size=6,
    )
)
def test_credentials_round_trip(credentials: dict[str, str]) -> None:
    data = encode_credentials(credentials)
    assert decode_credentials(data) == (credentials, ())


def test_bad_credential_entries_are_skipped_by_key() -> None:
    good = encode_credentials({"ns/s/key": "sk-1"})
    data = good | {"nounderscores": "c2stMQ==", "ns_s_bad": "not base64!", "ns_s_latin1": "/w=="}
    credentials, skipped = decode_credentials(data)
    assert credentials == {"ns/s/key": "sk-1"}
    assert sorted(skipped) == ["nounderscores", "ns_s_bad", "ns_s_latin1"]
    assert decode_credentials(None) == ({}, ())
