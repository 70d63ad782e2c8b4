"""The hypothesis strategies of the client-side fuzz (`proxy_fuzz` holds the target, the raw
request and the oracle): what a client can put in front of the application.

Methods the HTTP parser knows, paths (the inference endpoints as spelled, or any with odd
suffixes and percent-escapes), headers the gateway reads or passes (credentials in every odd
form, Content-Type, Cache-Control, the sticky header, X-Forwarded-*, random names; values of
visible ASCII, tab, space and obs-text bytes, up to 8 KB), bodies (near-valid documents with
wrong-typed fields, random JSON, deep nesting, inserted garbage, BOM, NaN, huge numbers,
duplicate keys), sometimes chunked. Bytes aiohttp's parser refuses before the application
are left out: they are the connection-level fuzz's.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st
from proxy_fuzz import KEY, MODELS, PATHS, Case

# framing and connection headers are the connection-level fuzz's (and this harness sets them)
_FRAMING = {"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade", "te"}
_TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# what may appear in a header value and reaches the app: visible ASCII, space, tab, obs-text
_VALUE_BYTES = st.sampled_from(
    [b"\t", b" "] + [bytes([b]) for b in range(0x21, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)]
)


def header_values() -> st.SearchStrategy[bytes]:
    junk = st.lists(_VALUE_BYTES, max_size=40).map(b"".join)
    long = st.integers(1, 8_000).map(lambda n: b"k" * n)
    return st.one_of(
        junk, long, st.sampled_from([b"", b" ", b"\xe9", b"\xff\xfe", "é".encode(), b"%00", b"\\u0000"])
    )


def clean(value: bytes) -> bytes:
    """A header value aiohttp's parser takes: no leading or trailing whitespace issues matter,
    but an empty value after stripping is still sent."""
    return value.strip(b" \t")


def authorizations() -> st.SearchStrategy[tuple[bytes, bytes]]:
    key = KEY.encode()
    values = st.one_of(
        st.just(b"Bearer " + key),
        st.sampled_from(
            [
                b"Bearer " + key[:-1],
                b"Bearer " + key + b"x",
                b"Bearer  " + key,
                b"bearer " + key,
                b"BEARER\t" + key,
                b"Bearer",
                b"Bearer ",
                b"Basic " + key,
                b"Bearer " + key + b"\xe9",
                b"Bearer \xe9",
                b"Bearer " + key + b" extra",
                key,
            ]
        ),
        st.tuples(st.sampled_from([b"Bearer ", b"Basic ", b"", b"Digest "]), header_values()).map(b"".join),
    )
    name = st.sampled_from([b"Authorization", b"api-key", b"authorization", b"API-KEY"])
    return st.tuples(name, values.map(clean))


def named_headers() -> st.SearchStrategy[tuple[bytes, bytes]]:
    names = st.sampled_from(
        [
            b"Content-Type",
            b"Cache-Control",
            b"x-session",
            b"Accept-Encoding",
            b"Accept",
            b"X-Forwarded-For",
            b"X-Forwarded-Proto",
            b"Expect-Not",
            b"x-routeway-route",
            b"OpenAI-Organization",
            b"User-Agent",
        ]
    )
    random_name = (
        st.text(_TOKEN_CHARS, min_size=1, max_size=20)
        .filter(lambda name: name.lower() not in _FRAMING)
        .map(str.encode)
    )
    known_values = st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=latin-1",
            b"application/json; charset=\xe9",
            b"text/plain",
            b"multipart/form-data; boundary=x",
            b"no-cache",
            b"no-store, max-age=0",
            b"max-age=\xe9",
            b"gzip, br",
            b"identity;q=0",
        ]
    )
    return st.tuples(st.one_of(names, random_name), st.one_of(known_values, header_values()).map(clean))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def request_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Request bodies near the valid ones, with fields of the wrong type or value."""
    field_values = {
        "model": st.one_of(st.sampled_from(MODELS), json_values),
        "messages": st.one_of(st.just([{"role": "user", "content": "hello fuzz"}]), json_values),
        "prompt": st.one_of(st.just("hello"), json_values),
        "input": st.one_of(st.just(["a", "b"]), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": st.one_of(st.just({"include_usage": True}), json_values),
        "max_tokens": st.one_of(st.integers(-5, 2**66), json_values),
        "max_completion_tokens": st.one_of(st.integers(-5, 100), json_values),
        "n": st.one_of(st.integers(-2, 200), json_values),
        "dimensions": st.one_of(st.integers(-2, 100_000), json_values),
        "temperature": json_values,
        "tools": json_values,
    }
    base = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi"}
    chosen = st.dictionaries(st.sampled_from(sorted(field_values)), st.none(), max_size=5).flatmap(
        lambda keys: st.fixed_dictionaries({k: field_values[k] for k in keys})
    )
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=2)
    return st.tuples(chosen, dropped).map(
        lambda pair: {**{k: v for k, v in base.items() if k not in pair[1]}, **pair[0]}
    )


def encode(document: Any) -> bytes:
    """JSON text as a client might send it (the standard library writes integers of any size)."""
    return json.dumps(document, separators=(",", ":")).encode()


def nested(depth: int, kind: int) -> bytes:
    opener, closer = (b"[", b"]") if kind == 0 else (b'{"a":', b"}")
    if kind == 2:  # alternating
        return b'{"a":[' * (depth // 2) + b"1" + b"]}" * (depth // 2)
    return opener * depth + b"1" + closer * depth


def bodies() -> st.SearchStrategy[bytes]:
    documents = request_documents().map(encode)
    deep = st.tuples(request_documents(), st.integers(1, 1500), st.integers(0, 2)).map(
        lambda t: encode(t[0])[:-1] + b',"extra":' + nested(t[1], t[2]) + b"}"
    )
    corrupt = st.tuples(documents, st.integers(0, 400), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    )
    literals = st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"a"',
            b"\xef\xbb\xbf" + b'{"model":"gpt","messages":[]}',
            b'{"model":"gpt","messages":[{"role":"user","content":"x"}],"temperature":NaN}',
            b'{"model":"gpt","messages":[{"role":"user","content":"x"}],"temperature":Infinity}',
            b'{"model":"gpt","messages":[{"role":"user","content":"x"}],"max_tokens":1e400}',
            b'{"model":"gpt","model":"mock","messages":[{"role":"user","content":"x"}]}',
            b'{"model":"gpt","messages":[{"role":"user","content":"\xe9"}]}',
            b'{"model":"gpt","messages":[{"role":"user","content":"\\ud800"}]}',
            b'{"model":"gpt","messages":[{"role":"user","content":"x"}],"n":18446744073709551616}',
        ]
    )
    return st.one_of(documents, documents, deep, corrupt, literals, st.binary(max_size=64))


def cases() -> st.SearchStrategy[Case]:
    # methods the HTTP parser knows (an unknown one is refused before the app: `conn`'s fuzz)
    methods = st.sampled_from(
        [b"POST"] * 24 + [b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"PROPFIND", b"PURGE"]
    )
    suffix = st.lists(
        st.sampled_from(
            [b"/", b"%e9", b"%00", b"%2F", b"%ff%fe", b"..", b"?x=%e9", b"?api-key=1", b"a", b"%25"]
        ),
        max_size=3,
    ).map(b"".join)
    paths = st.tuples(st.sampled_from([p.encode() for p in PATHS] + [b"/", b"/v1", b"/v2/x"]), suffix).map(
        b"".join
    )
    # one of each name (aiohttp refuses a second Content-Type or User-Agent before the app);
    # the keyed variant below still sends a second Authorization
    headers = st.lists(
        st.one_of(authorizations(), named_headers()), max_size=6, unique_by=lambda h: h[0].lower()
    )
    keyed = st.tuples(st.just((b"Authorization", b"Bearer " + KEY.encode())), headers).map(
        lambda t: [t[0], *t[1]]
    )
    return st.builds(
        Case,
        method=methods,
        # three in four on an inference endpoint as it is spelled, the rest anywhere
        path=st.tuples(st.integers(0, 3), st.sampled_from([p.encode() for p in PATHS[:3]]), paths).map(
            lambda t: t[1] if t[0] else t[2]
        ),
        headers=st.one_of(keyed, keyed, headers).map(tuple),
        body=bodies(),
        chunked=st.integers(0, 4).map(lambda n: n == 0),
    )
