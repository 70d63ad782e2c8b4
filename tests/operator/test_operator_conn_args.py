"""A ModelGateway's `spec.connections` reaches the proxy pods as `routeway proxy` flags.

Covers: defaults add no flag (the proxy's own defaults are the same, checked against the
parser); each non-default field becomes its flag; the args the operator writes are accepted by
the real `routeway proxy` command line and give the limits the spec asked for; invalid values
are refused by the model (and so by `routeway validate` and the CRD's pattern).
"""

from __future__ import annotations

import pydantic
import pytest
from routeway_operator import builders
from routeway_proxy.commands import options_from_args

from routeway.cli import build_parser
from routeway.resources import ModelGateway


def gateway(connections: dict[str, object] | None = None) -> ModelGateway:
    spec: dict[str, object] = {"workers": 2}
    if connections is not None:
        spec["connections"] = connections
    return ModelGateway.model_validate(
        {"metadata": {"name": "gw", "namespace": "ml", "uid": "u"}, "spec": spec}
    )


def proxy_limits(args: list[str]) -> object:
    parsed = build_parser().parse_args(args)
    return options_from_args(parsed, command="routeway proxy").connections


def test_default_connections_add_no_flag_and_match_the_proxy_defaults() -> None:
    args = builders.proxy_args(gateway())
    assert not [a for a in args if a.endswith("-timeout") or a == "--max-connections"]
    spec = gateway().spec.connections
    limits = proxy_limits(args)
    assert limits.header_timeout == 10.0 == float(spec.header_timeout.rstrip("s"))  # type: ignore[attr-defined]
    assert limits.body_timeout == 30.0 == float(spec.body_timeout.rstrip("s"))  # type: ignore[attr-defined]
    assert limits.idle_timeout == 60.0 == float(spec.idle_timeout.rstrip("s"))  # type: ignore[attr-defined]
    assert limits.max_per_worker == 4096 == spec.max_per_worker  # type: ignore[attr-defined]


def test_each_connections_field_becomes_its_flag() -> None:
    gw = gateway({"headerTimeout": "2s", "bodyTimeout": "1m30s", "idleTimeout": "500ms", "maxPerWorker": 100})
    args = builders.proxy_args(gw)
    assert args[-8:] == [
        "--header-timeout",
        "2s",
        "--body-timeout",
        "1m30s",
        "--idle-timeout",
        "500ms",
        "--max-connections",
        "100",
    ]
    limits = proxy_limits(args)
    assert (limits.header_timeout, limits.body_timeout, limits.idle_timeout, limits.max_per_worker) == (  # type: ignore[attr-defined]
        2.0,
        90.0,
        0.5,
        100,
    )
    [container] = builders.build_deployment(gw, builders.OperatorSettings())["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"] == args


@pytest.mark.parametrize(
    "connections",
    [{"headerTimeout": "10"}, {"idleTimeout": "-1s"}, {"maxPerWorker": 0}, {"bodyTimeout": "soon"}],
)
def test_invalid_connections_are_refused(connections: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        gateway(connections)


def test_a_zero_timeout_is_refused_by_the_model_and_the_crd_rule() -> None:
    with pytest.raises(pydantic.ValidationError, match="longer than 0s"):
        gateway({"idleTimeout": "0ms0s"})
    [rule] = [r for r in gateway().spec.connections.CEL_RULES if "idleTimeout" in r["rule"]]
    assert "matches" in rule["rule"]
