"""A ModelClient's status document (pure, with the vocabulary and rules of routeway.status).

- `Accepted` and `ResolvedRefs` come from translation: attached by the routes' rule
  (allowedRoutes), `AuthDisabled` on a gateway without `spec.auth`, the key Secret and key.
- `Programmed`: the gateway's config holding the client (it is listed in
  `gateway.clients`) is applied. It keeps the message of the revision that first programmed
  the client's generation, so another object's change does not rewrite every client's status;
  when a new config fails, a client programmed at this generation by the config still in the
  ConfigMap stays programmed (as routes do).
- `Ready` / `Reconciling` / `Stalled` from those three (kstatus).
- `gateway` (`ns/name`) while attached; `models` as `kubectl get mc` shows them: the spec's
  names and globs (`chat,embed-*`), `*` for every model.
- `usage` (routeway.client_usage) when the gateway's proxies were read; None clears it on a
  client that is no longer attached.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from routeway.resources import ModelClient
from routeway.status import (
    PROGRAMMED,
    REASON_NOT_ATTACHED,
    REASON_PENDING,
    Condition,
    Observed,
    Outcome,
    merge_conditions,
    not_programmed,
    programmed,
    summarize,
    translated,
)


def models_text(client: ModelClient | None) -> str | None:
    """`chat,embed-*` (spec order, each once) or `*` (every model); None: not parsed."""
    if client is None:
        return None
    if client.spec.models is None:
        return "*"
    return ",".join(dict.fromkeys(client.spec.models))


def _previously_programmed(client: Observed) -> Mapping[str, Any] | None:
    """The Programmed condition written for this very generation, if it was True."""
    if client.status.get("observedGeneration") != client.generation:
        return None
    for cond in client.status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == PROGRAMMED and cond.get("status") == "True":
            return cond
    return None


def client_programmed(
    client: Observed, gateway: tuple[str, str] | None, listed: bool, outcome: Outcome
) -> Condition:
    """`listed`: the client is in the config just rendered for its gateway."""
    before = _previously_programmed(client)
    if gateway is None:
        return not_programmed(REASON_NOT_ATTACHED, "the client is not attached to a gateway")
    if outcome.programmed.status != "True":
        if outcome.revision is not None and before is not None:
            return Condition(PROGRAMMED, "True", str(before.get("reason")), str(before.get("message") or ""))
        return not_programmed(outcome.programmed.reason, outcome.programmed.message)
    if not listed:
        return not_programmed(REASON_PENDING, "waiting for the gateway's config to be rendered")
    if before is not None:
        return Condition(PROGRAMMED, "True", str(before.get("reason")), str(before.get("message") or ""))
    return programmed(outcome.revision or "", f"holds generation {client.generation}")


def client_status(
    client: Observed,
    model: ModelClient | None,
    conditions: Iterable[Condition],
    gateway: tuple[str, str] | None,
    listed: bool,
    outcome: Outcome,
    now: str,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`gateway`: the one it is attached to (None: not accepted); `listed`: it is in that
    gateway's rendered config; `usage`: its `status.usage` (None: leave it out; cleared when
    not attached)."""
    accepted, resolved = translated(conditions)
    programmed_ = client_programmed(client, gateway, listed, outcome)
    listed_conditions = [accepted, resolved, programmed_]
    doc: dict[str, Any] = {
        "observedGeneration": client.generation,
        "conditions": merge_conditions(
            client.status.get("conditions"),
            [*listed_conditions, *summarize(listed_conditions)],
            client.generation,
            now,
        ),
        "gateway": f"{gateway[0]}/{gateway[1]}" if gateway else None,
        "models": models_text(model),
    }
    if gateway is None:
        doc["usage"] = None
    elif usage is not None:
        doc["usage"] = dict(usage)
    return doc
