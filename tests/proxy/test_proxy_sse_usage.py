"""The SSE usage filter's targeted path cuts exactly what splitting the whole block would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from routeway.proxy.streaming import _USAGE_OPEN, SSEUsageFilter, _find_boundary

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
    assert sse.usage is not None and (sse.usage.prompt_tokens, sse.usage.completion_tokens) == (3, 5)
