"""The Grafana dashboard ships as a sidecar ConfigMap and queries only what the proxy exports.

The ConfigMap: absent by default; when enabled, a valid core/v1 ConfigMap (Kubernetes schema,
strict) in the release namespace or the configured one, with the sidecar's label, the folder
annotation only when a folder is set, and dashboards/routeway.json byte for byte, small enough
for client-side `kubectl apply` (which copies it into a 256 KiB annotation).

The dashboard: a dashboard JSON with unique panel ids, panels inside the 24-column grid and not
overlapping, and every panel and query on the `$datasource` variable.

The queries (every panel target and every variable query): Grafana's variables are substituted
and the result is parsed with a real PromQL parser (promql-parser). The truth is the proxy's own
exposition: a fresh `ProxyMetrics` registry with one child per labelled family, rendered by
`generate_latest` (what `/metrics` serves) and read back with prometheus_client's parser, which
groups samples into families as Prometheus does (`_total`, `_bucket`, `_sum`, `_count` belong to
their family; `_created` series are left out because multiprocess mode, `--workers N`, never
exports them). Then:
- every metric selected is a sample name the proxy exports (so `routeway_requests`, without
  `_total`, fails), and every `routeway_*` identifier in the text is one of those selections;
- every label in a matcher, `by`/`without`, `on`/`ignoring`, `group_left`/`group_right`, and the
  label of `label_values()`, is a label of the series at that point: the metric's own labels
  plus the `namespace` and `pod` target labels scraping adds (`SCRAPE_LABELS`);
- `histogram_quantile` gets `le`, and both sides of a one-to-one operation (or an `or`) carry
  the same labels, otherwise the panel is silently empty;
- every panel query is narrowed to the selected namespace, gateway, route and backend;
- every exported family has a panel, and every variable used is defined.
A table of planted mistakes checks that the checker itself reports each kind.

The gateway variable is read from pod names (no scrape setup gives a gateway label): its regex
and the pods' matcher are checked against the names Kubernetes gives the pods of the Deployment
the operator's builder makes, for short, long (truncated) and hashed gateway names.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from routeway_operator.builders import build_deployment
from routeway_operator.settings import OperatorSettings
from routeway_proxy.metrics import ProxyMetrics  # this module's one import of the proxy package

from routeway.resources import ModelGateway

from .conftest import CHART, RELEASE_NAMESPACE, Rendered

KUBERNETES_VERSION = "1.33"
DASHBOARD_FILE = CHART / "dashboards" / "routeway.json"
CONFIGMAP = "rw-routeway-dashboard"
ENABLED = {"grafanaDashboard": {"enabled": True}}
CUSTOM = {
    "grafanaDashboard": {
        "enabled": True,
        "namespace": "monitoring",
        "sidecarLabel": "grafana.example.com/dashboard",
        "sidecarLabelValue": "routeway",
        "folder": "AI gateways",
        "folderAnnotation": "k8s-sidecar-target-directory",
    }
}

SCRAPE_LABELS = frozenset({"namespace", "pod"})
"""Target labels Prometheus adds to the proxies' series when it scrapes their pods (a PodMonitor,
or the usual `kubernetes-pods` job through the pods' prometheus.io annotations). The chart's
README names them as the dashboard's one requirement on the scrape setup."""

INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
"""Grafana's built-in variables the queries may use, with a value the parser accepts."""

PLACEHOLDER = "grafana_var_"
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)")

Labels = frozenset[str]


# ---------------------------------------------------------------------------- the proxy's truth


@dataclass(frozen=True)
class Exposition:
    """What a scrape of a proxy pod returns: sample names, their labels, their families."""

    labels: dict[str, Labels]
    family_of: dict[str, str]

    @property
    def families(self) -> set[str]:
        return set(self.family_of.values())


def read_proxy_exposition() -> Exposition:
    """The proxy's `/metrics` text read back as Prometheus groups it, every family populated."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    # arms: rollout observations; usage: cost and the per-client windows of GET /usage
    wrappers = [*vars(metrics).values(), *vars(metrics.arms).values(), *vars(metrics.usage).values()]
    for metric in wrappers:
        if isinstance(metric, MetricWrapperBase):
            # A labelled family exports nothing until it has a child; one child shows its labels.
            names = getattr(metric, "_labelnames")  # noqa: B009  (no public accessor)
            if names:
                metric.labels(*("x" for _ in names))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    family_names = {family.name for family in families}
    labels: dict[str, set[str]] = {}
    family_of: dict[str, str] = {}
    for family in families:
        assert family.samples, f"{family.name}: a family without samples cannot be checked"
        for sample in family.samples:
            if sample.name.removesuffix("_created") in family_names - {sample.name}:
                continue  # the `_created` companion of a counter or histogram
            labels.setdefault(sample.name, set()).update(sample.labels)
            family_of[sample.name] = family.name
    return Exposition(labels={name: frozenset(found) for name, found in labels.items()}, family_of=family_of)


@pytest.fixture(scope="module")
def exposition() -> Exposition:
    return read_proxy_exposition()


# ---------------------------------------------------------------------------- the checker


def substitute(expr: str, defined: set[str]) -> tuple[str, list[str]]:
    """The query as Prometheus would get it: `$var` -> a placeholder, intervals -> a duration."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name in INTERVALS:
            return INTERVALS[name]
        if name not in defined:
            problems.append(f"${name} is not a variable of the dashboard")
        return PLACEHOLDER + name

    return VARIABLE.sub(replace, expr), problems


@dataclass
class QueryChecker:
    """Walks a parsed query, computing the label names each node's result carries."""

    exposition: Exposition
    problems: list[str] = field(default_factory=list)
    selectors: list[promql_parser.VectorSelector] = field(default_factory=list)

    def check(self, query: str) -> Labels | None:
        try:
            expr = promql_parser.parse(query)
        except Exception as error:  # the parser raises a plain exception type of its own
            self.problems.append(f"does not parse: {error}")
            return None
        result = self.labels(expr)
        selected = {s.name for s in self.selectors}
        for name in sorted(set(re.findall(r"routeway_[a-z_]+", query)) - selected):
            self.problems.append(f"{name} appears outside any selector the checker saw")
        return result

    def labels(self, node: Any) -> Labels | None:
        """Label names of the node's result; None for a scalar or a string."""
        if isinstance(node, promql_parser.VectorSelector):
            return self._selector(node)
        if isinstance(node, promql_parser.MatrixSelector):
            return self._selector(node.vector_selector)
        if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
            return self.labels(node.expr)
        if isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral):
            return None
        if isinstance(node, promql_parser.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, promql_parser.Call):
            return self._call(node)
        if isinstance(node, promql_parser.BinaryExpr):
            return self._binary(node)
        self.problems.append(f"{type(node).__name__}: a node this checker does not know")
        return None

    def _require(self, names: Labels, available: Labels, where: str) -> None:
        for name in sorted(names - available):
            self.problems.append(f"{where}: label {name!r} is not on the series there ({sorted(available)})")

    def _selector(self, node: promql_parser.VectorSelector) -> Labels:
        self.selectors.append(node)
        name = node.name
        if name is None:
            self.problems.append(f"{node}: a selector without a metric name")
            return SCRAPE_LABELS
        own = self.exposition.labels.get(name)
        if own is None:
            close = difflib.get_close_matches(name, list(self.exposition.labels), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.problems.append(f"{name} is not a series the proxy exports{hint}")
            own = frozenset()
        available = own | SCRAPE_LABELS
        matchers = [*node.matchers.matchers, *(m for group in node.matchers.or_matchers for m in group)]
        self._require(frozenset(m.name for m in matchers), available, f"matchers of {name}")
        return available

    def _aggregate(self, node: promql_parser.AggregateExpr) -> Labels:
        inner = self.labels(node.expr) or frozenset()
        op = str(node.op)
        modifier = node.modifier
        if modifier is None:
            grouped: Labels = frozenset()
        else:
            named = frozenset(modifier.labels)
            by = modifier.type == promql_parser.AggModifierType.By
            self._require(named, inner, f"{op} {'by' if by else 'without'}")
            grouped = named if by else inner - named
        return inner if op in {"topk", "bottomk", "limitk", "limit_ratio"} else grouped

    def _call(self, node: promql_parser.Call) -> Labels | None:
        name = node.func.name
        args = [self.labels(arg) for arg in node.args]
        if name in {"label_replace", "label_join", "count_values", "absent", "absent_over_time"}:
            self.problems.append(f"{name}(): changes labels in a way this checker does not follow")
        if name == "histogram_quantile":
            buckets = args[1] or frozenset()
            self._require(frozenset({"le"}), buckets, "histogram_quantile")
            return buckets - {"le"}
        if node.func.return_type == promql_parser.ValueType.Scalar:
            return None
        vectors = [arg for arg in args if arg is not None]
        return vectors[0] if vectors else frozenset()

    def _binary(self, node: promql_parser.BinaryExpr) -> Labels | None:
        lhs, rhs = self.labels(node.lhs), self.labels(node.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs  # with a scalar: the vector's labels
        op = str(node.op)
        modifier = node.modifier
        matching = modifier.matching if modifier is not None else None
        card = modifier.card if modifier is not None else promql_parser.VectorMatchCardinality.OneToOne
        on = matching is not None and matching.type == promql_parser.LabelModifierType.Include
        named: Labels = frozenset(matching.labels) if matching is not None else frozenset()
        if on:
            self._require(named, lhs, f"{op} on(), left side")
            self._require(named, rhs, f"{op} on(), right side")
        else:
            self._require(named, lhs | rhs, f"{op} ignoring()")
        group = frozenset(modifier.group_labels or []) if modifier is not None else frozenset()
        if card == promql_parser.VectorMatchCardinality.ManyToOne:
            self._require(group, rhs, f"{op} group_left()")
            return lhs | group
        if card == promql_parser.VectorMatchCardinality.OneToMany:
            self._require(group, lhs, f"{op} group_right()")
            return rhs | group
        if (
            matching is None
            and lhs != rhs
            and (op == "or" or card != promql_parser.VectorMatchCardinality.ManyToMany)
        ):
            self.problems.append(
                f"{op}: the sides carry different labels ({sorted(lhs)} vs {sorted(rhs)}), so no series match"
            )
        if card == promql_parser.VectorMatchCardinality.ManyToMany or matching is None:
            return lhs
        return named if on else lhs - named


# ---------------------------------------------------------------------------- the dashboard


@dataclass(frozen=True)
class Query:
    where: str
    text: str
    label: str | None = None  # label_values(): the label it lists


def load_dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(document, dict)
    return document


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def variables_of(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in panels_of(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any]) -> list[Query]:
    queries = []
    for name, variable in variables_of(dashboard).items():
        if variable["type"] != "query":
            continue
        text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = LABEL_VALUES.fullmatch(text)
        assert match and match["selector"], f"variable {name}: expected label_values(<selector>, <label>)"
        queries.append(Query(f"variable {name}", match["selector"], match["label"]))
    return queries


def check_query(query: Query, exposition: Exposition, defined: set[str]) -> QueryChecker:
    text, problems = substitute(query.text, defined)
    checker = QueryChecker(exposition, problems)
    result = checker.check(text)
    if query.label is not None and result is not None and query.label not in result:
        checker.problems.append(f"label_values: {query.label!r} is not a label of {query.text}")
    return checker


# ---------------------------------------------------------------------------- tests: ConfigMap


def test_dashboard_is_absent_by_default(template: Callable[..., Rendered]) -> None:
    assert [c["metadata"]["name"] for c in template().of_kind("ConfigMap")] == []


def test_configmap_is_valid_and_carries_the_dashboard(template: Callable[..., Rendered]) -> None:
    configmap = template(ENABLED).one("ConfigMap", CONFIGMAP)
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    metadata = configmap["metadata"]
    assert metadata["namespace"] == RELEASE_NAMESPACE
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["app.kubernetes.io/component"] == "dashboard"
    assert "annotations" not in metadata
    assert configmap["data"] == {"routeway.json": DASHBOARD_FILE.read_text().strip()}
    # client-side `kubectl apply` keeps the whole object in an annotation of at most 256 KiB
    assert len(json.dumps(configmap).encode()) < 200 * 1024


def test_configmap_follows_values(template: Callable[..., Rendered]) -> None:
    configmap = template(CUSTOM).one("ConfigMap", CONFIGMAP)
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    metadata = configmap["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana.example.com/dashboard"] == "routeway"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"k8s-sidecar-target-directory": "AI gateways"}


# ---------------------------------------------------------------------------- tests: dashboard


def test_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(panels_of(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert any(panel["type"] == "row" for panel in panels)
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    datasource = variables_of(dashboard)["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")


def test_every_query_selects_what_the_proxy_exports(exposition: Exposition) -> None:
    dashboard = load_dashboard()
    defined = set(variables_of(dashboard))
    problems = [
        f"{query.where}: {problem}"
        for query in [*panel_queries(dashboard), *variable_queries(dashboard)]
        for problem in check_query(query, exposition, defined).problems
    ]
    assert not problems, "\n".join(problems)


def test_every_panel_query_is_narrowed_to_the_selection(exposition: Exposition) -> None:
    """A panel must never mix in other gateways, routes or backends than the ones selected."""
    dashboard = load_dashboard()
    defined = set(variables_of(dashboard))
    problems = []
    for query in panel_queries(dashboard):
        for selector in check_query(query, exposition, defined).selectors:
            values = {m.name: m.value for m in selector.matchers.matchers}
            wanted = {"namespace": "namespace", "pod": "gateway"}
            wanted |= {
                label: label
                for label in ("route", "backend")
                if label in exposition.labels.get(selector.name or "", frozenset())
            }
            for label, variable in wanted.items():
                if PLACEHOLDER + variable not in values.get(label, ""):
                    problems.append(
                        f"{query.where}: {selector.name} is not narrowed by {label} (${variable})"
                    )
    assert not problems, "\n".join(problems)


def test_every_exported_family_has_a_panel(exposition: Exposition) -> None:
    dashboard = load_dashboard()
    used = {
        exposition.family_of[name]
        for query in panel_queries(dashboard)
        for name in re.findall(r"routeway_[a-z_]+", query.text)
        if name in exposition.family_of
    }
    assert sorted(exposition.families - used) == []


def test_truth_is_what_the_proxy_exports(exposition: Exposition) -> None:
    """Guards the fixture: sample names as scraped, `_created` left out, labels per sample."""
    assert exposition.labels["routeway_requests_total"] == {"route", "backend", "code", "client"}
    assert exposition.labels["routeway_request_duration_seconds_bucket"] == {"route", "backend", "le"}
    assert exposition.family_of["routeway_tokens_total"] == "routeway_tokens"
    assert "routeway_requests" not in exposition.labels
    assert not [name for name in exposition.labels if name.endswith("_created")]


VALID = "sum by (route, backend) (rate(routeway_requests_total{code=~'5..'}[5m]))"
PLANTED: dict[str, tuple[str, str]] = {
    "misspelled-metric": ("rate(routeway_request_total[5m])", "not a series the proxy exports"),
    "family-name-not-sample-name": ("rate(routeway_requests[5m])", "not a series the proxy exports"),
    "created-series": ("routeway_requests_created", "not a series the proxy exports"),
    "label-not-on-metric": ("sum by (code) (routeway_requests_in_flight)", "label 'code'"),
    "matcher-not-on-metric": ("routeway_config_info{route='a'}", "label 'route'"),
    "label-dropped-by-aggregation": (
        "max by (backend) (sum by (route) (routeway_requests_in_flight))",
        "label 'backend'",
    ),
    "quantile-without-le": (
        "histogram_quantile(0.9, sum by (route) (rate(routeway_request_duration_seconds_bucket[5m])))",
        "label 'le'",
    ),
    "division-sides-differ": (
        "sum by (route, backend) (rate(routeway_requests_total[5m]))"
        " / sum by (route) (rate(routeway_requests_total[5m]))",
        "the sides carry different labels",
    ),
    "on-label-missing": (
        "routeway_requests_in_flight / on(backend) routeway_config_info",
        "label 'backend'",
    ),
    "undefined-variable": ('routeway_config_info{namespace=~"$namespce"}', "$namespce is not a variable"),
    "syntax-error": ("sum(rate(routeway_requests_total[5m])", "does not parse"),
}


def test_checker_accepts_a_valid_query(exposition: Exposition) -> None:
    assert check_query(Query("valid", VALID), exposition, {"namespace"}).problems == []


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_checker_reports_planted_mistakes(exposition: Exposition, case: str) -> None:
    query, fragment = PLANTED[case]
    problems = check_query(Query(case, query), exposition, {"namespace"}).problems
    assert any(fragment in problem for problem in problems), problems


# ---------------------------------------------------------------------------- tests: gateway variable


def pod_names(gateway: str) -> list[str]:
    """Names Kubernetes gives the pods of the gateway's proxy Deployment: the ReplicaSet is
    `<deployment>-<pod-template-hash>` and a pod `generateName: <replicaset>-`, cut to 58
    characters before 5 random ones are appended (apiserver's SimpleNameGenerator)."""
    deployment = build_deployment(
        ModelGateway.model_validate({"metadata": {"name": gateway, "namespace": "team-a"}}),
        OperatorSettings(),
    )
    name = deployment["metadata"]["name"]
    return [
        f"{name}-{template_hash}-"[:58] + "x2k4z" for template_hash in ("7f9c6d58", "5d8f7c9b4", "6b7c8d9f5b")
    ]


GATEWAYS = ["default", "g", "g-abcde", "g-abcde-fghij", "a.b", "team-" + "x" * 33, "y" * 42, "z" * 60]


def test_gateway_variable_and_pod_matcher_follow_pod_names() -> None:
    dashboard = load_dashboard()
    matchers = {m for query in panel_queries(dashboard) for m in re.findall(r'pod=~"([^"]+)"', query.text)}
    assert len(matchers) == 1, f"every panel should select pods the same way: {matchers}"
    (matcher,) = matchers
    extract = re.compile(variables_of(dashboard)["gateway"]["regex"].strip("/"))
    shown = {}
    for gateway in GATEWAYS:
        values = set()
        for pod in pod_names(gateway):
            found = extract.fullmatch(pod)
            assert found, f"the gateway variable finds no gateway in pod {pod}"
            values.add(found[1])
        assert len(values) == 1, values
        shown[gateway] = values.pop()
    assert shown["default"] == "default" and shown["a.b"] == "a.b" and shown["y" * 42] == "y" * 42
    for gateway, value in shown.items():
        pattern = re.compile(matcher.replace("$gateway", re.escape(value)))
        for other in GATEWAYS:
            for pod in pod_names(other):
                assert bool(pattern.fullmatch(pod)) == (other == gateway), (gateway, pod)


def test_proxy_pods_announce_their_metrics_port_to_the_kubernetes_pods_scrape_job() -> None:
    """The Service exposes only the client port: the `kubernetes-pods` job finds the metrics
    through the pod annotations, which must name the container's admin port and its path."""
    deployment = build_deployment(
        ModelGateway.model_validate({"metadata": {"name": "gw", "namespace": "team-a"}}), OperatorSettings()
    )
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    admin = {port["name"]: port["containerPort"] for port in container["ports"]}["admin"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(admin),
        "prometheus.io/path": "/metrics",
    }
    args = container["args"]
    assert args[args.index("--admin-port") + 1] == str(admin)  # where the proxy serves /metrics
