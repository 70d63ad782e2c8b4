"""The status documents of the three kinds (written by the operator, read by tools)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from routeway.specbase import FieldError as FieldError
from routeway.specbase import SpecModel as _Spec


class Condition(_Spec):
    """A status condition as Kubernetes tooling (kubectl wait, kstatus, Argo CD) reads it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    type: str = Field(description="Condition type, e.g. Ready, Accepted, ResolvedRefs, Programmed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable details.")
    observed_generation: int | None = Field(None, description="metadata.generation this condition describes.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")


class LastGoodVersion(_Spec):
    """The newest version of the object that translated without a problem: what the gateway
    serves while a newer one has a problem (routeway.lastgood). Kept in status so an operator
    restart serves the same; a spec, never a credential (Secrets are referenced by name)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    generation: int | None = Field(None, description="metadata.generation of that version.")
    spec: dict[str, Any] = Field(default_factory=dict, description="Its spec, defaults applied.")


class _Status(_Spec):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    observed_generation: int | None = Field(None, description="metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions, keyed by type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    serving_generation: int | None = Field(
        None,
        description="The generation the gateway's config is built from: observedGeneration, or an "
        "older one (lastGood) while the newest has a problem (Accepted or ResolvedRefs say which); "
        "absent while no version of it is usable.",
    )
    last_good: LastGoodVersion | None = Field(
        None, description="The newest version that had no problem, served in place of a newer one that has."
    )


class ModelBackendStatus(_Status):
    routes: int | None = Field(None, description="Number of routes sending to this backend.")


class RolloutStatus(_Spec):
    """`status.rollout`: the route's rollout state (routeway.rollout.document writes it). The
    operator keeps no rollout state anywhere else, so timers and handled action tokens are here
    too; the fields people read come first."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    phase: str | None = Field(None, description="Stable, Progressing, Paused or RolledBack.")
    stable_revision: str | None = Field(None, description="Hash of the revision serving as stable.")
    canary_revision: str | None = Field(
        None, description="Hash of the revision being rolled out (or the one rolled back)."
    )
    current_step_index: int | None = Field(None, description="Index of the canary step being run.")
    canary_weight: int | None = Field(None, description="Percent of traffic the last setWeight step set.")
    message: str | None = Field(None, description="Why the phase is what it is, with the numbers.")
    weights: list[dict[str, Any]] = Field(
        default_factory=list, description="Per backend and arm: percent of the route's traffic."
    )
    analysis: list[dict[str, Any]] = Field(
        default_factory=list, description="The last check per metric: stable, canary, limit, verdict."
    )
    last_check: dict[str, Any] | None = Field(
        None, description="The last analysis check: verdict, time, counts."
    )
    failed_checks: int | None = Field(None, description="Failed analysis checks in this rollout.")
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="Past revisions with outcome, reason and time, newest first."
    )
    handled_actions: list[dict[str, Any]] = Field(
        default_factory=list, description="Manual action tokens already handled (never replayed)."
    )
    desired_revision: str | None = Field(None, description="Hash of the revision the spec describes.")
    stable_backends: list[str] = Field(default_factory=list, description="Backends of the stable revision.")
    canary_backends: list[str] | None = Field(None, description="Backends of the canary revision.")
    started_at: str | None = Field(None, description="When this rollout started (RFC 3339).")
    step_started_at: str | None = Field(None, description="When the current step started (RFC 3339).")
    deadline_at: str | None = Field(None, description="When progressDeadline runs out (RFC 3339).")
    next_check_at: str | None = Field(None, description="When the next analysis check is due (RFC 3339).")
    paused_by: str | None = Field(None, description="step or inconclusive: what only a promote ends.")
    paused_at: str | None = Field(None, description="Since when Paused (RFC 3339).")
    frozen_at: str | None = Field(None, description="Since when spec.paused froze it (RFC 3339).")


class ModelRouteStatus(_Status):
    backend_weights: str | None = Field(
        None, description="Effective weights being served, e.g. `llama-v1=90,llama-v2=10`."
    )
    gateway: str | None = Field(None, description="namespace/name of the gateway serving this route.")
    config_revision: str | None = Field(None, description="Gateway config revision that programs this route.")
    rollout: RolloutStatus | None = Field(None, description="Progressive delivery of the route's revisions.")


class ModelGatewayStatus(_Status):
    replicas: int | None = Field(None, description="Proxy pods.")
    ready_replicas: int | None = Field(None, description="Proxy pods ready.")
    address: str | None = Field(None, description="In-cluster URL of the gateway's OpenAI-compatible API.")
    config_revision: str | None = Field(None, description="Revision of the ProxyConfig applied.")
    routes: int | None = Field(None, description="Number of routes served.")
    proxies: int | None = Field(
        None, description="Ready proxy pods serving configRevision, as last read from their admin ports."
    )


class UsageWindow(_Spec):
    """Usage of one window as the operator last aggregated it from the gateway's proxies."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")
    start: str | None = Field(None, description="Start of the window (RFC 3339).")
    requests: int = Field(0, description="Requests admitted.")
    prompt_tokens: int = Field(0, description="Prompt tokens used.")
    completion_tokens: int = Field(0, description="Completion tokens used.")
    cost: str | None = Field(None, description="Cost of those tokens, a decimal in `currency`.")


class ClientUsage(_Spec):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")
    minute: UsageWindow | None = Field(None, description="The current minute.")
    day: UsageWindow | None = Field(None, description="The current UTC day.")
    currency: str | None = Field(None, description="Currency of the costs (of the backends' pricing).")
    observed_at: str | None = Field(None, description="When the proxies were last read (RFC 3339).")


class ModelClientStatus(_Status):
    gateway: str | None = Field(None, description="namespace/name of the gateway this key is accepted by.")
    models: str | None = Field(None, description="The models this key may call, e.g. `chat,embed-*` or `*`.")
    usage: ClientUsage | None = Field(None, description="Tokens and cost of the current minute and UTC day.")
