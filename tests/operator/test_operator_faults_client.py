"""The operator's API client repeats transient failures, and only those.

Matrix: 503/500/429 and a refused connection repeated until the request passes; a failure
that outlasts the repeats raised as retryable (kopf.TemporaryError); a conflict, a 404 and
a 422 never repeated (the caller decides what they mean); a write whose answer was lost is
repeated and meets 409 (create-or-patch then reads it); Retry-After parsed.
"""

from __future__ import annotations

import socket
from typing import Any

import kopf
import pytest
from faults_rig import faulty_emulator
from kmock_faults import FaultyEmulator
from routeway_operator.kube import ApiError, KubeApi, _retry_after

CM = "/api/v1/namespaces/default/configmaps"
FAST = (0.01, 0.01, 0.01)


@pytest.fixture()
async def kmock() -> Any:
    async with faulty_emulator() as emulator:
        yield emulator


async def client(kmock: FaultyEmulator) -> KubeApi:
    api = await KubeApi.connect(server=str(kmock.url).rstrip("/"))
    return KubeApi(api._client, backoffs=FAST)


def requests_to(kmock: FaultyEmulator, method: str, path: str) -> int:
    return sum(1 for r in kmock._requests if r.method == method and r.url.path == path)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_failures_are_repeated(kmock: FaultyEmulator, status: int) -> None:
    api = await client(kmock)
    try:
        kmock.fail("POST", "/configmaps", status, times=3)
        created = await api.create(CM, {"metadata": {"name": "a"}, "data": {"k": "v"}})
        assert created["metadata"]["name"] == "a"
        assert requests_to(kmock, "POST", CM) == 4

        kmock.fail("GET", "/configmaps/a", status, times=4)  # one more than the repeats
        with pytest.raises(ApiError) as caught:
            await api.get(f"{CM}/a")
        assert caught.value.status == status
        assert isinstance(caught.value.to_kopf("reading"), kopf.TemporaryError)
        assert requests_to(kmock, "GET", f"{CM}/a") == 4
    finally:
        await api.close()


@pytest.mark.parametrize("status", [409, 404, 422, 403])
async def test_other_failures_are_not_repeated(kmock: FaultyEmulator, status: int) -> None:
    api = await client(kmock)
    try:
        kmock.fail("PATCH", "/configmaps/a", status)
        with pytest.raises(ApiError) as caught:
            await api.patch(f"{CM}/a", {"data": {"k": "v"}})
        assert caught.value.status == status
        assert requests_to(kmock, "PATCH", f"{CM}/a") == 1
    finally:
        await api.close()


async def test_a_lost_answer_repeats_into_a_conflict(kmock: FaultyEmulator) -> None:
    api = await client(kmock)
    try:
        kmock.fail("POST", "/configmaps", 504, applied=True)
        with pytest.raises(ApiError) as caught:
            await api.create(CM, {"metadata": {"name": "a"}})
        assert caught.value.status == 409  # created by the first attempt: the caller re-reads
    finally:
        await api.close()


async def test_a_refused_connection_is_repeated_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    api = await KubeApi.connect(server=f"http://127.0.0.1:{port}")
    api = KubeApi(api._client, backoffs=FAST)
    try:
        with pytest.raises(ApiError) as caught:
            await api.get(CM)
        assert caught.value.status == 0 and caught.value.transient
    finally:
        await api.close()


def test_retry_after_values() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after("0.5") == 0.5
    assert _retry_after(None) is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None  # a date: the backoff applies
