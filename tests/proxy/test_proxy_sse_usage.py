"""The SSE usage filter's targeted path cuts exactly what splitting the whole block would."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from routeway_proxy.streaming import (
    _USAGE_OBJECT,
    _USAGE_OPEN,
    SSEUsageFilter,
    _find_boundary,
    find_document_usage,
    match_usage_object,
    scan_document_usage,
)

EVENTS = [
    b'data: {"choices":[{"delta":{"content":"hi"}}]}',
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}',
    b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
    b'data: {"choices":[],"usage":null}',
    b'data: {"choices":[],\ndata: "usage": {"prompt_tokens": 4, "completion_tokens": 6}}',
    b'event: x\ndata: {"choices":[],"usage":{"prompt_tokens":7}}',
    b'data: {"choices":[],"usage":\n\n{"prompt_tokens":7}}',
    b'data: {"usage": {broken',
    b"data: [DONE]",
    b": comment",
    b"",
]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(EVENTS), st.sampled_from([b"\n", b"\n\n", b"\n\n\n", b"\n\n\n\n", b"\r\n\r\n"])
        )
    ),
    st.booleans(),
)
def test_targeted_usage_path_equals_the_full_split(events: list[tuple[bytes, bytes]], strip: bool) -> None:
    block = b"".join(event + end for event, end in events)
    if not block.endswith((b"\n\n", b"\r\n\r\n")):
        return  # _take_usage is only given blocks that end on an event boundary
    fast, slow, fed = SSEUsageFilter(strip), SSEUsageFilter(strip), SSEUsageFilter(strip)
    expected = slow._take_usage_split(block)
    assert fast._take_usage(block) == expected
    assert fast.usage == slow.usage
    # feed as it was before the targeted path: boundary by regex, whole-block split
    reference = SSEUsageFilter(strip)
    end = _find_boundary(block)
    complete, rest = block[:end], block[end:]
    if _USAGE_OPEN.search(complete) is not None:
        complete = reference._take_usage_split(complete)
    assert fed.feed(block) + fed.flush() == complete + rest
    assert fed.usage == reference.usage


def test_only_the_usage_event_is_dropped() -> None:
    sse = SSEUsageFilter(strip_usage_chunk=True)
    head = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' * 17
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n'
    assert sse.feed(head + usage + b"data: [DONE]\n\n") == head + b"data: [DONE]\n\n"
    assert sse.usage == (3, 5)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.sampled_from([b'"usage"', b": ", b":", b"{", b"}", b"a", b" ", b"\n", b'"x":1,'])), st.data()
)
def test_usage_object_scanner_equals_the_regex(parts: list[bytes], data: st.DataObject) -> None:
    body = b"".join(parts)
    keys = [i for i in range(len(body)) if body.startswith(b'"usage"', i)]
    position = data.draw(st.sampled_from(keys) if keys else st.integers(0, len(body)))
    match = _USAGE_OBJECT.match(body, position)
    assert match_usage_object(body, position) == (match.span(1) if match else None)


def test_usage_object_with_details_is_found() -> None:
    body = (
        b'{"choices":[],"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":2},'
        b'"completion_tokens":16}}'
    )
    start, end = match_usage_object(body, body.find(b'"usage"')) or (0, 0)
    assert body[start:end] == body[body.find(b"{", 15) : -1]
    assert match_usage_object(b'"usage": {"a": {"b": {}}}', 0) is None


_COUNT = st.integers(0, 10**7)
_MEMBERS = {
    "prompt_tokens": _COUNT,
    "completion_tokens": _COUNT,
    "total_tokens": _COUNT,
    "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": _COUNT}),
    "completion_tokens_details": st.fixed_dictionaries({"reasoning_tokens": _COUNT}),
}


@settings(max_examples=1500, deadline=None)
@given(
    st.permutations(list(_MEMBERS)),
    st.integers(0, len(_MEMBERS)),
    st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]),
    st.booleans(),
    st.data(),
)
def test_usual_layout_match_agrees_with_the_general_scan(
    order: list[str], kept: int, separators: tuple[str, str], embeddings: bool, data: st.DataObject
) -> None:
    """Any member order, subset and spacing: the one-regex path finds what the general scan finds."""
    usage = {name: data.draw(_MEMBERS[name], label=name) for name in order[:kept]}
    document = {"object": "list", "data": []} if embeddings else {"choices": [{"message": {"content": "x"}}]}
    body = json.dumps({**document, "usage": usage}, separators=separators).encode()
    assert find_document_usage(body) == scan_document_usage(body, body.rfind(b'"usage"'))


def test_usual_layout_reads_the_top_level_counts_where_the_scan_gives_up() -> None:
    deeper = b'{"usage":{"prompt_tokens":1,"completion_tokens":2,"d":{"x":{"y":3}}}}'
    braces_in_a_string = b'{"usage":{"prompt_tokens":1,"completion_tokens":2,"note":"{{"}}'
    nested_usage_first = (
        b'{"x":{"usage":{"prompt_tokens":7,"completion_tokens":8}},'
        b'"usage":{"prompt_tokens":1,"completion_tokens":2,"d":{"x":{"y":3}}}}'
    )
    assert scan_document_usage(deeper, deeper.rfind(b'"usage"')) is None
    assert scan_document_usage(braces_in_a_string, braces_in_a_string.rfind(b'"usage"')) is None
    assert scan_document_usage(nested_usage_first, nested_usage_first.rfind(b'"usage"')) == (7, 8)
    for body in (deeper, braces_in_a_string, nested_usage_first):
        assert find_document_usage(body) == (1, 2)


def test_absurdly_long_counts_are_not_read() -> None:
    """A broken or hostile upstream must not make int() raise (a 500) on thousands of digits."""
    huge = b"9" * 5000
    assert find_document_usage(b'{"usage":{"prompt_tokens":' + huge + b',"completion_tokens":2}}') is None
    assert find_document_usage(b'{"usage":{"total_tokens":3,"prompt_tokens":' + huge + b"}}") is None
    assert find_document_usage(b'{"usage":{"prompt_tokens":1,"completion_tokens":' + huge + b"}}") == (1, 0)
    assert find_document_usage(b'{"usage":{"prompt_tokens":123456789012345,"completion_tokens":2}}') == (
        123456789012345,
        2,
    )
