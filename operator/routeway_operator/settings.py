"""The operator's settings: read once at startup from the environment the Helm chart sets.

Handlers never read `os.environ`; they get this frozen object through kopf's memo, so a test
can run two differently configured operators in one process and a reviewer can see every knob
in one place. CLI flags override the environment (`apply_overrides`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from routeway.resources import GROUP

FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP
DEFAULT_IMAGE = "ghcr.io/routeway/routeway:latest"
DEFAULT_PEERING = "routeway"


class PeeringMode(StrEnum):
    """How the operator peers with its other replicas (peering.py decides at start-up)."""

    AUTO = "auto"  # peer when the peering object exists, else run standalone and say so
    REQUIRED = "required"  # --peering NAME or ROUTEWAY_PEERING_NAME (the chart): missing is an error
    OFF = "off"  # --standalone


class SettingsError(ValueError):
    """An environment variable or flag with a value the operator cannot use."""


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"{name} must be a TCP port, got {raw!r}")
    return int(raw)


def _split_namespaces(raw: str) -> tuple[str, ...]:
    return tuple(sorted({ns.strip() for ns in raw.split(",") if ns.strip()}))


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace (cluster-wide)
    proxy_image: str = DEFAULT_IMAGE
    log_level: str = "INFO"
    resync_interval: float = 300.0  # seconds between full re-checks of each gateway
    usage_interval: float = 30.0  # seconds between reads of a gateway's proxies' /usage (clients)
    peering_name: str = DEFAULT_PEERING
    peering: PeeringMode = PeeringMode.AUTO
    pod_namespace: str = "default"  # where the operator runs (peering object, events source)
    liveness_port: int = 8080
    liveness_enabled: bool = True
    metrics_port: int | None = None  # Prometheus /metrics; None: not served
    # Reconcile tuning (not in the chart's environment contract; tests shorten them).
    debounce: float = 0.2  # seconds a burst of changes may add before one render
    peering_wait: float = 10.0  # seconds a missing required peering or a failing API is asked again
    workers: int = 4  # gateways reconciled concurrently
    status_concurrency: int = 16  # status patches in flight per reconcile
    configmap_budget: int = 900 * 1024  # bytes of one ConfigMap's data before compressing/sharding

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering is PeeringMode.OFF

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        level = env.get("ROUTEWAY_LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(f"ROUTEWAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return cls(
            namespaces=_split_namespaces(env.get("ROUTEWAY_NAMESPACES", "")),
            proxy_image=env.get("ROUTEWAY_PROXY_IMAGE", "").strip() or DEFAULT_IMAGE,
            log_level=level,
            resync_interval=_positive_float(env, "ROUTEWAY_RESYNC_INTERVAL", 300.0),
            usage_interval=_positive_float(env, "ROUTEWAY_USAGE_INTERVAL", 30.0),
            peering_name=env.get("ROUTEWAY_PEERING_NAME", "").strip() or DEFAULT_PEERING,
            peering=PeeringMode.REQUIRED
            if env.get("ROUTEWAY_PEERING_NAME", "").strip()
            else PeeringMode.AUTO,
            pod_namespace=env.get("POD_NAMESPACE", "").strip() or "default",
            liveness_port=_port(env, "ROUTEWAY_LIVENESS_PORT", 8080),
            metrics_port=_port(env, "ROUTEWAY_METRICS_PORT", 0) or None,
        )

    def apply_overrides(
        self,
        *,
        namespaces: Sequence[str] | None = None,
        all_namespaces: bool = False,
        proxy_image: str | None = None,
        log_level: str | None = None,
        resync_interval: float | None = None,
        peering_name: str | None = None,
        liveness_port: int | None = None,
        liveness_enabled: bool | None = None,
        standalone: bool | None = None,
    ) -> OperatorSettings:
        """CLI flags win over the environment; `--all-namespaces` wins over both lists."""
        changes: dict[str, object] = {}
        if all_namespaces:
            changes["namespaces"] = ()
        elif namespaces:
            changes["namespaces"] = _split_namespaces(",".join(namespaces))
        for name, value in (
            ("proxy_image", proxy_image),
            ("log_level", log_level.upper() if log_level else None),
            ("resync_interval", resync_interval),
            ("peering_name", peering_name),
            ("peering", PeeringMode.REQUIRED if peering_name else None),
            ("liveness_port", liveness_port),
            ("liveness_enabled", liveness_enabled),
            ("peering", PeeringMode.OFF if standalone else None),
        ):
            if value is not None:
                changes[name] = value
        return replace(self, **changes)  # type: ignore[arg-type]
