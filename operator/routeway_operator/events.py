"""Kubernetes Events for what a user should notice: invalid routes, missing backends, applied configs.

Posted through the API directly rather than `kopf.info()`: kopf's event queue lives in the
context of its per-object handler tasks, while reconciles run in the operator's own workers
and report on objects other than the one whose event started them. Callers post only on a
transition (a condition that just turned False, a revision that just changed), so a restart
or resync posts nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from routeway.resources import GROUP
from routeway.status import now_rfc3339
from routeway_operator.kube import ApiError, KubeApi, path_for

log = logging.getLogger("routeway.operator.events")

COMPONENT = "routeway-operator"
MAX_MESSAGE = 1024


class EventRecorder:
    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._instance = os.environ.get("HOSTNAME", "routeway-operator")

    async def post(self, involved: Mapping[str, str], kind: str, reason: str, message: str) -> None:
        """Post one Event; a failure to post is logged and does not fail the reconcile
        (Events are advisory; the same facts are in the object's status conditions)."""
        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
            "involvedObject": dict(involved),
            "type": kind,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/{COMPONENT}",
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._api.create(path_for("v1", "events", involved["namespace"]), body)
        except ApiError as exc:
            log.warning(
                "could not post event %s on %s/%s: %s", reason, involved["kind"], involved["name"], exc
            )

    async def normal(self, involved: Mapping[str, str], reason: str, message: str) -> None:
        await self.post(involved, "Normal", reason, message)

    async def warning(self, involved: Mapping[str, str], reason: str, message: str) -> None:
        await self.post(involved, "Warning", reason, message)
