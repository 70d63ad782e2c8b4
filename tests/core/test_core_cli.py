"""`routeway validate` and `routeway render` through the installed console script.

Matrix: valid quick start (exit 0); one line per problem naming file, object and field for
wrong types, unknown fields, bad durations, missing required fields, unknown kinds, wrong
apiVersion, malformed YAML, non-mapping documents, unreadable files, duplicates, dangling
references, a bad canary strategy (steps and analysis, down to the list index); stdin (`-f -`); directories; render json/yaml, --gateway selection, redaction,
exit 1 when problems exist; never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROUTEWAY = str(Path(sys.executable).parent / "routeway")
QUICKSTART = ROOT / "examples" / "quickstart"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ROUTEWAY, *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


GOOD_BACKEND = """
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: a}
spec: {provider: openai, url: "http://a:8000/v1"}
"""


def test_quickstart_is_valid():
    proc = cli("validate", "-f", str(QUICKSTART))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout == ""
    assert "valid: 6 object(s)" in proc.stderr


def test_field_errors_name_file_object_and_field(tmp_path: Path):
    path = write(
        tmp_path,
        "bad.yaml",
        GOOD_BACKEND
        + """---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  model: chat
  backends: [{name: a, weight: "lots"}]
  timeout: 5 minutes
  colour: blue
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: nourl}
spec: {provider: openai}
""",
    )
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert f"{path}#2: ModelRoute/chat: spec.backends[0].weight: Input should be a valid integer" in lines[0]
    assert any(
        line.startswith(f"{path}#2: ModelRoute/chat: spec.timeout: ") and "invalid duration" in line
        for line in lines
    )
    assert f"{path}#2: ModelRoute/chat: spec.colour: unknown field" in lines
    assert f"{path}#3: ModelBackend/nourl: spec.url: url is required when provider is openai" in lines
    assert len(lines) == 4


def test_dangling_reference_is_a_problem(tmp_path: Path):
    path = write(
        tmp_path,
        "r.yaml",
        """
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec: {model: chat, backends: [{name: ghost}]}
""",
    )
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f"{path}: ModelRoute/chat: spec.backends[0].name: BackendNotFound: ModelBackend 'ghost' not found in namespace default"
    )


def test_malformed_yaml_unknown_kind_and_non_mapping(tmp_path: Path):
    broken = write(tmp_path, "broken.yaml", "kind: ModelRoute\nmetadata: {name: [unclosed\n")
    unknown = write(
        tmp_path,
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n- just\n- a list\n",
    )
    wrong_group = write(
        tmp_path, "group.yaml", GOOD_BACKEND.replace("routeway.dev/v1alpha1", "routeway.dev/v2")
    )
    proc = cli("validate", "-f", broken, "-f", unknown, "-f", wrong_group)
    assert proc.returncode == 1
    out = proc.stdout
    assert f"{broken}: file: malformed YAML (line 3, column 1)" in out
    assert f"{unknown}: ConfigMap/x: kind: unsupported kind 'ConfigMap'" in out
    assert f"{unknown}#2: document 2: expected a mapping, got list" in out
    assert f"{wrong_group}: ModelBackend/a: apiVersion: expected routeway.dev/v1alpha1" in out


def test_missing_file_and_duplicates(tmp_path: Path):
    one = write(tmp_path, "one.yaml", GOOD_BACKEND)
    two = write(tmp_path, "two.yaml", GOOD_BACKEND)
    proc = cli("validate", "-f", one, "-f", two, "-f", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1
    assert f"{two}: ModelBackend/a: metadata.name: defined twice (also in {one})" in proc.stdout
    assert f"{tmp_path / 'missing.yaml'}: file: cannot read: No such file or directory" in proc.stdout


def test_stdin_and_directories():
    proc = cli("validate", "-f", "-", stdin=(QUICKSTART / "backends.yaml").read_text())
    assert (proc.returncode, proc.stdout) == (0, "")
    assert "valid: 3 object(s) in 1 file(s)" in proc.stderr
    proc = cli(
        "validate",
        "-f",
        "-",
        "-f",
        str(QUICKSTART / "routes.yaml"),
        stdin=(QUICKSTART / "backends.yaml").read_text(),
    )
    assert proc.returncode == 0, proc.stdout


def test_render_yaml_and_json_agree_and_hold_no_secrets(tmp_path: Path):
    path = write(
        tmp_path,
        "s.yaml",
        """
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {api-key: sk-do-not-print}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: a}
spec: {provider: openai, url: "http://a:8000/v1", apiKeySecretRef: {name: creds, key: api-key}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec: {model: chat, backends: [{name: a}]}
""",
    )
    as_json = cli("render", "-f", path, "-o", "json")
    as_yaml = cli("render", "-f", path)
    assert as_json.returncode == as_yaml.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == yaml.safe_load(as_yaml.stdout)
    doc = json.loads(as_json.stdout)
    assert doc["backends"][0]["credentialRef"] == "default/creds/api-key"
    assert doc["schemaVersion"] == 1 and len(doc["revision"]) == 16
    assert "sk-do-not-print" not in as_json.stdout + as_yaml.stdout + as_json.stderr


def test_render_gateway_selection(tmp_path: Path):
    path = str(ROOT / "tests" / "golden" / "multi-gateway.in.yaml")
    proc = cli("render", "-f", path, "--gateway", "infra/internal", "-o", "json")
    assert json.loads(proc.stdout)["gateway"]["name"] == "internal"
    proc = cli("render", "-f", path, "--gateway", "public", "-o", "json")
    assert [r["id"] for r in json.loads(proc.stdout)["routes"]] == ["product/small"]
    assert proc.returncode == 1  # the set has a problem (a route the internal gateway refuses)
    assert "NotAllowedByGateway" in proc.stderr
    proc = cli("render", "-f", path, "--gateway", "nope")
    assert proc.returncode == 1 and "no ModelGateway 'nope' found" in proc.stderr


def test_usage_errors_exit_2():
    assert cli("validate").returncode == 2
    assert cli("render", "-f", str(QUICKSTART), "-o", "xml").returncode == 2


def test_cross_field_rules_name_the_field(tmp_path: Path):
    path = write(
        tmp_path,
        "x.yaml",
        """
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: a}
spec: {provider: openai}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: b}
spec: {provider: openai, url: "http://user:hunter2@host/v1"}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: r}
spec: {model: m, backends: [{name: a}, {name: a}]}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
data: {k: "!!!not-base64"}
""",
    )
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{path}: ModelBackend/a: spec.url: url is required when provider is openai",
        f"{path}#2: ModelBackend/b: spec.url: must not contain user:password@; put the credential in apiKeySecretRef",
        f"{path}#3: ModelRoute/r: spec.backends[1].name: backend names must be unique within a route: a",
        f"{path}#4: Secret/s: data.k: not valid base64 (use stringData for plain text)",
    ]
    assert "hunter2" not in proc.stdout + proc.stderr


def test_duplicate_yaml_keys_are_reported(tmp_path: Path):
    path = write(
        tmp_path, "d.yaml", "kind: ModelRoute\nspec: {backends: [{name: a, weight: 1, weight: 0}]}\n"
    )
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert "found duplicate key 'weight'" in proc.stdout


CANARY_ROUTE = """
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: llama-v2}
spec: {provider: mock}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  model: chat
  backends: [{name: llama-v2, weight: 100}]
  strategy:
    canary:
      steps:
%s
"""


def test_bad_canary_steps_name_the_step_and_field(tmp_path: Path):
    steps = """\
        - setWeight: 50
        - pause: {duration: 5m}
        - setWeight: 10
        - setWeight: 60
          pause: {}
        - pause:
        - pause: {duration: 100ms}"""
    path = write(tmp_path, "canary.yaml", CANARY_ROUTE % steps)
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    one_action = "a step sets exactly one of setWeight or pause (pause: {} waits for a manual promote)"
    assert proc.stdout.splitlines() == [
        f"{path}#2: ModelRoute/chat: spec.strategy.canary.steps[3]: {one_action}",
        f"{path}#2: ModelRoute/chat: spec.strategy.canary.steps[4]: {one_action}",
        f"{path}#2: ModelRoute/chat: spec.strategy.canary.steps[5].pause.duration: "
        "pause.duration must be between 1s and 720h",
    ]
    # Once each step is well formed, the order of the weights is judged.
    path = write(tmp_path, "order.yaml", CANARY_ROUTE % steps.rsplit("\n", 4)[0])
    proc = cli("validate", "-f", path)
    assert proc.stdout.splitlines() == [
        f"{path}#2: ModelRoute/chat: spec.strategy.canary.steps[2].setWeight: "
        "setWeight must not decrease from one step to the next (10 after 50)"
    ]


def test_bad_canary_analysis_names_the_metric_and_field(tmp_path: Path):
    analysis = """\
        - setWeight: 10
      analysis:
        interval: 10m
        metrics:
          - {name: errorRate, max: 2%}
          - {name: latencyP95, max: 0.5}
          - {name: ttftP95}
          - {name: p99, max: 20s}"""
    path = write(tmp_path, "analysis.yaml", CANARY_ROUTE % analysis)
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    where = f"{path}#2: ModelRoute/chat: spec.strategy.canary.analysis"
    assert proc.stdout.splitlines() == [
        f"{where}.metrics[0].max: errorRate's max is a fraction from 0 to 1, e.g. 0.02",
        f"{where}.metrics[1].max: latencyP95's max is a duration, e.g. 20s",
        f"{where}.metrics[2]: a metric needs max, maxRatioToStable or both",
        f"{where}.metrics[3].name: Input should be 'errorRate', 'latencyP95', 'latencyP50', "
        "'ttftP95' or 'ttftP50'",
    ]
    fixed = analysis.rsplit("\n", 3)[0] + "\n          - {name: latencyP95, max: 20s}"
    fixed = fixed.replace("max: 2%", "max: 0.02")
    path = write(tmp_path, "window.yaml", CANARY_ROUTE % fixed)
    proc = cli("validate", "-f", path)
    assert proc.stdout.splitlines() == [
        f"{path}#2: ModelRoute/chat: spec.strategy.canary.analysis.window: window must be at least "
        "interval and at most 24h (window defaults to 5m): 5m with interval 10m"
    ]
