"""Offline checks of helm/slingshot-service: what `helm lint`/`helm template` plus schema validation would catch.

Helm itself runs in-process (helm-python-sdk: Helm v4's Go SDK as a shared library); its render
does not parse YAML, so the output is parsed here and every document is validated: built-in kinds
against the strict Kubernetes schemas of 1.29 to 1.32, KEDA kinds against the cloudcoil pydantic
models with extra fields forbidden, the ServiceMonitor against a structural schema. A kind none of
these knows fails.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledJob, ScaledObject, TriggerAuthentication
from pydantic import BaseModel
from yamllint import linter
from yamllint.config import YamlLintConfig

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "slingshot-service"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0", "1.32.0")
RELEASE = "orders"
NAMESPACE = "work"
FULLNAME = f"{RELEASE}-slingshot-service"
GPG_DIR = "/run/secrets/slingshot/gpg"
STORE_DIR = "/run/secrets/slingshot/password-store"

KEDA_MODELS: dict[str, type[BaseModel]] = {
    "ScaledObject": ScaledObject,
    "ScaledJob": ScaledJob,
    "TriggerAuthentication": TriggerAuthentication,
}
# Metadata keys KEDA 2.16's rabbitmq scaler reads; the models type trigger metadata as a free map.
RABBITMQ_TRIGGER_KEYS = {
    "host", "protocol", "queueName", "mode", "value", "activationValue", "vhostName", "excludeUnacknowledged",
    "useRegex", "operation", "pageSize", "timeout", "unsafeSsl", "hostFromEnv", "usernameFromEnv", "passwordFromEnv",
}  # fmt: skip

# The parts of prometheus-operator's ServiceMonitor CRD (monitoring.coreos.com/v1) the chart emits.
_LABEL_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABEL_MAP, "annotations": _LABEL_MAP},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": _LABEL_MAP},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


@dataclass
class Rendered:
    """One render: the manifests as `helm template` prints them, parsed, and NOTES.txt."""

    text: str
    docs: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def pod_templates(self) -> list[dict[str, Any]]:
        """The worker pod template of the Deployment or of the ScaledJob's Job."""
        pods = [d["spec"]["template"] for d in self.of_kind("Deployment")]
        pods += [d["spec"]["jobTargetRef"]["template"] for d in self.of_kind("ScaledJob")]
        return pods


def rendered_from(manifests: dict[str, str]) -> Rendered:
    notes = ""
    sources: list[str] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        elif text.strip():
            sources.append(f"---\n# Source: {path}\n{text.strip()}\n")
    text = "".join(sources)
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    return Rendered(text, docs, notes)


def ci_values(path: Path) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict), f"{path.name}: not a map"
    return values


def base_values() -> dict[str, Any]:
    return ci_values(CHART / "ci" / "defaults-values.yaml")


def with_changes(changes: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE (the defaults ci file) with dotted-path CHANGES applied; a value of ... deletes the key."""
    values = copy.deepcopy(base_values() if base is None else base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return values


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def render(chart: helm_python.Chart) -> Callable[[dict[str, Any]], Rendered]:
    def _render(values: dict[str, Any]) -> Rendered:
        return rendered_from(chart.render(values, name=RELEASE, namespace=NAMESPACE))

    return _render


@pytest.fixture(scope="module", params=CI_VALUES, ids=[p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def ci(
    request: pytest.FixtureRequest, chart: helm_python.Chart, render: Callable[[dict[str, Any]], Rendered]
) -> tuple[str, dict[str, Any], Rendered]:
    """(ci file id, merged values, render) for each ci/*-values.yaml."""
    path: Path = request.param
    values = ci_values(path)
    return path.name.removesuffix("-values.yaml"), chart.merge_values(values), render(values)


# --------------------------------------------------------------------------- lint, yamllint, schemas


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict(values_file: Path) -> None:
    for version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        report = helm_python.lint(CHART, ci_values(values_file), strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], f"helm lint --strict (Kubernetes {version}): {problems} {report['errors']}"


def test_ci_files_cover_every_mode() -> None:
    assert {p.name.removesuffix("-values.yaml") for p in CI_VALUES} == set(EXPECTED_KINDS)


# Warnings count too. Helm's toYaml never indents sequences while the templates do, hence
# indent-sequences: whatever; long lines (image digests, base64) are not a defect.
YAMLLINT = YamlLintConfig(
    "extends: relaxed\nrules:\n  line-length: disable\n  indentation: {spaces: consistent, indent-sequences: whatever}\n"
)


def test_yamllint_clean(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, _, out = ci
    problems = [f"line {p.line}: {p.message} ({p.rule})" for p in linter.run(out.text, YAMLLINT)]
    assert not problems, "yamllint on the rendered manifests:\n" + "\n".join(problems) + "\n" + out.text


def test_yamllint_chart_files() -> None:
    files = [CHART / "Chart.yaml", CHART / "values.yaml", *CI_VALUES]
    problems = [f"{f.name}:{p.line}: {p.message}" for f in files for p in linter.run(f.read_text(), YAMLLINT)]
    assert not problems


def validate_document(doc: dict[str, Any]) -> None:
    """Validate one manifest by its kind; raises AssertionError naming the kind and the problem."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    where = f"{kind} {doc.get('metadata', {}).get('name')}"
    if api == "keda.sh/v1alpha1" and kind in KEDA_MODELS:
        KEDA_MODELS[kind].model_validate(doc, strict=True, extra="forbid")
        for trigger in doc["spec"].get("triggers", []):
            assert trigger["type"] == "rabbitmq", f"{where}: unexpected trigger {trigger['type']}"
            unknown = set(trigger["metadata"]) - RABBITMQ_TRIGGER_KEYS
            assert not unknown, f"{where}: rabbitmq trigger metadata KEDA does not read: {sorted(unknown)}"
        if kind == "ScaledJob":  # its jobTargetRef is a batch/v1 JobSpec: hold it to Kubernetes' own schema
            job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": doc["spec"]["jobTargetRef"]}
            for version in KUBE_VERSIONS:
                kubernetes_validate.validate(job, version, strict=True)
        return
    if api == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise AssertionError(f"{where}: no schema for {api} {kind} in Kubernetes {version}: {exc.message}") from None
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where} is invalid for Kubernetes {version}: {exc.message} at {list(exc.absolute_path)}") from None


def test_every_document_validates(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, _, out = ci
    assert out.docs
    for doc in out.docs:
        validate_document(doc)


def test_unknown_kind_fails_validation() -> None:
    with pytest.raises(AssertionError, match=r"no schema for example\.com/v1 Widget"):
        validate_document({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "s"},
              "spec": {"scaleTargetRef": {"name": "d"}, "triggers": [], "minReplicas": 0}}  # fmt: skip
    with pytest.raises(ValueError, match="minReplicas"):
        validate_document(scaled)
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"},
               "spec": {"selector": {"matchLabels": {}}, "endpoints": [{"port": "http", "paths": "/metrics"}]}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError, match="'paths' was unexpected"):
        validate_document(monitor)


EXPECTED_KINDS = {
    "defaults": Counter(Deployment=1, ServiceAccount=1, PodDisruptionBudget=1, Secret=2),
    "keda-on": Counter(Deployment=1, ServiceAccount=1, PodDisruptionBudget=1, ScaledObject=1, TriggerAuthentication=1, Secret=1),
    "scaledjob": Counter(ServiceAccount=1, ScaledJob=1, TriggerAuthentication=1),
    "existing-secrets": Counter(Deployment=1, PodDisruptionBudget=1),
    "servicemonitor": Counter(Deployment=1, ServiceAccount=1, PodDisruptionBudget=1, Service=1, ServiceMonitor=1),
}


def test_kinds_per_mode(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    name, _, out = ci
    assert Counter(doc["kind"] for doc in out.docs) == EXPECTED_KINDS[name]


# --------------------------------------------------------------------------- properties of the render


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (worker,) = pod["spec"]["containers"]
    assert worker["name"] == "worker"
    return dict(worker)


def test_grace_period_is_drain_timeout_plus_margin(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, values, out = ci
    drain = values["service"]["drainTimeout"]
    # Helm's coalescing drops null values, so the default override is absent from the merged values.
    expected = values.get("terminationGracePeriodSeconds") or drain + values["service"]["drainMargin"]
    for pod in out.pod_templates():
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace == expected and grace > drain
        env = {e["name"]: e.get("value") for e in container(pod)["env"]}
        assert env["SLINGSHOT_DRAIN_TIMEOUT"] == str(drain)


def test_grace_period_defaults(chart: helm_python.Chart) -> None:
    values = chart.values
    assert values["service"]["drainTimeout"] == 25 and values["service"]["drainMargin"] == 5
    assert "terminationGracePeriodSeconds" in (CHART / "values.yaml").read_text()
    assert values.get("terminationGracePeriodSeconds") is None


def test_grace_period_follows_drain_timeout(render: Callable[[dict[str, Any]], Rendered]) -> None:
    out = render(with_changes({"service.drainTimeout": 100, "service.drainMargin": 7}))
    (pod,) = out.pod_templates()
    assert pod["spec"]["terminationGracePeriodSeconds"] == 107


def test_security_context_is_hardened(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, _, out = ci
    for pod in out.pod_templates():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        sc = container(pod)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_hit_health_endpoints(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, values, out = ci
    port = values["service"]["healthPort"]
    for pod in out.pod_templates():
        worker = container(pod)
        ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = worker[probe]["httpGet"]
            assert get["path"] == path and ports[get["port"]] == port, f"{probe}: {get}"
        env = {e["name"]: e.get("value") for e in worker["env"]}
        assert env["SLINGSHOT_HEALTH_PORT"] == str(port)


def test_env_carries_the_service_settings(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, values, out = ci
    for pod in out.pod_templates():
        env = {e["name"]: e.get("value") for e in container(pod)["env"]}
        assert env["SLINGSHOT_SERVICE"] == values["service"]["name"]
        assert env["SLINGSHOT_CONFIG_HOST"] == values["service"]["configHost"]
        assert env["SLINGSHOT_HANDLER"] == values["service"]["handler"]
        assert env["SLINGSHOT_PREFETCH"] == str(values["service"]["prefetch"])
        limit = values["service"].get("deliveryLimit")  # helm drops keys whose value is null
        assert env.get("SLINGSHOT_DELIVERY_LIMIT") == (None if limit is None else str(limit))
        assert env["SLINGSHOT_GPG_KEYS_DIR"] == GPG_DIR and env["PASSWORD_STORE_DIR"] == STORE_DIR
        for extra in values["extraEnv"]:
            assert extra in container(pod)["env"]


def test_secrets_mounted_read_only(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, values, out = ci
    created = {d["metadata"]["name"]: d for d in out.of_kind("Secret")}
    for pod in out.pod_templates():
        mounts = {m["mountPath"]: m for m in container(pod)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for path in (GPG_DIR, STORE_DIR):
            assert mounts[path].get("readOnly") is True, f"{path} is not mounted read-only"
        gpg = volumes[mounts[GPG_DIR]["name"]]
        store = volumes[mounts[STORE_DIR]["name"]]
        if values["gpg"]["volume"]:
            assert {k: v for k, v in gpg.items() if k != "name"} == values["gpg"]["volume"]
        else:
            name = gpg["secret"]["secretName"]
            assert gpg["secret"]["defaultMode"] == 0o440
            if values["gpg"]["existingSecret"]:
                assert name == values["gpg"]["existingSecret"] and name not in created
            else:
                keys = created[name]["data"]
                assert {k: base64.b64decode(v).decode() for k, v in keys.items()} == values["gpg"]["privateKeys"]
        ps = values["passwordStore"]
        if ps["volume"]:
            assert {k: v for k, v in store.items() if k != "name"} == ps["volume"]
        elif ps["existingConfigMap"]:
            assert store["configMap"]["name"] == ps["existingConfigMap"]
            assert store["configMap"].get("items", []) == ps["items"]
        else:
            name = store["secret"]["secretName"]
            if ps["existingSecret"]:
                assert name == ps["existingSecret"]
            else:
                assert created[name]["data"] == ps["files"]
        tmp = volumes[mounts["/tmp"]["name"]]["emptyDir"]
        assert tmp.get("medium", "") == values["tmp"]["medium"] and tmp["sizeLimit"] == values["tmp"]["sizeLimit"]


def test_selectors_match_the_pods(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    _, values, out = ci
    (pod,) = out.pod_templates()
    labels = pod["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    for deployment in out.of_kind("Deployment"):
        assert selects(deployment["spec"]["selector"]["matchLabels"])
    for pdb in out.of_kind("PodDisruptionBudget"):
        assert selects(pdb["spec"]["selector"]["matchLabels"])
    for service in out.of_kind("Service"):
        assert selects(service["spec"]["selector"])
    account = pod["spec"]["serviceAccountName"]
    if values["serviceAccount"]["create"]:
        assert out.one("ServiceAccount", account)["automountServiceAccountToken"] is False
    else:
        assert account == values["serviceAccount"]["name"]


def test_keda_scaled_object_scales_to_zero_on_ready_and_unacked(render: Callable[[dict[str, Any]], Rendered]) -> None:
    values = ci_values(CHART / "ci" / "keda-on-values.yaml")
    out = render(values)
    scaled = out.one("ScaledObject")
    deployment = out.one("Deployment")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert scaled["spec"]["cooldownPeriod"] == values["keda"]["cooldownPeriod"]
    assert scaled["spec"]["pollingInterval"] == 15
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"] == {
        "protocol": "http", "queueName": "classify-in", "mode": "QueueLength", "value": "20",
        "activationValue": "0", "excludeUnacknowledged": "false",
    }  # fmt: skip
    auth = out.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    secret = out.one("Secret", ref["name"])
    assert ref["parameter"] == "host"
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == values["keda"]["connection"]["url"]


def test_keda_scaled_job_mode(render: Callable[[dict[str, Any]], Rendered]) -> None:
    values = ci_values(CHART / "ci" / "scaledjob-values.yaml")
    out = render(values)
    assert not out.of_kind("Deployment") and not out.of_kind("PodDisruptionBudget")
    job = out.one("ScaledJob")["spec"]
    assert job["minReplicaCount"] == 0 and job["maxReplicaCount"] == 4
    assert job["rollout"] == {"strategy": "gradual"}
    assert job["jobTargetRef"]["activeDeadlineSeconds"] == 3600
    pod = job["jobTargetRef"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in container(job["jobTargetRef"]["template"])["env"]}
    assert env["SLINGSHOT_EXIT_WHEN_IDLE"] == "20" and env["SLINGSHOT_MAX_MESSAGES"] == "50"
    assert container(job["jobTargetRef"]["template"])["image"].endswith("@" + values["image"]["digest"])
    (trigger,) = job["triggers"]
    assert trigger["metadata"]["queueName"] == "render-report-in" and trigger["metadata"]["excludeUnacknowledged"] == "false"
    (ref,) = out.one("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]["secretTargetRef"]
    assert (ref["name"], ref["key"]) == ("rabbitmq-management", "url")
    assert not out.of_kind("Secret"), "an existing connection Secret is not recreated"
    # Without a message limit the worker gets no SLINGSHOT_MAX_MESSAGES at all.
    (pod_template,) = render(with_changes({"keda.scaledJob.maxMessages": 0}, values)).pod_templates()
    assert "SLINGSHOT_MAX_MESSAGES" not in {e["name"] for e in container(pod_template)["env"]}


def test_service_monitor_scrapes_the_metrics_service(render: Callable[[dict[str, Any]], Rendered]) -> None:
    out = render(ci_values(CHART / "ci" / "servicemonitor-values.yaml"))
    monitor = out.one("ServiceMonitor")
    service = out.one("Service")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] == "http" and port["port"] == 9100
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The Deployment's own labels never leak the metrics component, so its selector stays stable.
    assert out.one("Deployment")["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"


def test_common_labels_never_replace_selector_labels(render: Callable[[dict[str, Any]], Rendered]) -> None:
    out = render(with_changes({"commonLabels": {"app.kubernetes.io/instance": "hijack", "team": "a"}, "podLabels": {"tier": "b"}}))
    (pod,) = out.pod_templates()
    assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert pod["metadata"]["labels"]["team"] == "a" and pod["metadata"]["labels"]["tier"] == "b"


def test_notes_describe_the_mode(ci: tuple[str, dict[str, Any], Rendered]) -> None:
    name, values, out = ci
    assert f'slingshot service "{values["service"]["name"]}"' in out.notes
    expected = {"keda-on": "KEDA ScaledObject", "scaledjob": "KEDA ScaledJob"}.get(name, "Mode: Deployment with")
    assert expected in out.notes


# --------------------------------------------------------------------------- bad values


# (id, changes to the defaults ci file, message, whether helm lint reports it too). Lint reports only
# schema violations: in lint mode Helm logs a template's `fail` instead of failing.
BAD_VALUES: list[tuple[str, dict[str, Any], str, bool]] = [
    ("negative replicas", {"replicaCount": -1}, "at '/replicaCount': minimum: got -1, want 0", True),
    ("unknown top-level key", {"replicas": 2}, "additional properties 'replicas' not allowed", True),
    ("unknown nested key", {"service.drain_timeout": 5}, "at '/service': additional properties 'drain_timeout' not allowed", True),
    ("missing service name", {"service.name": ...}, "at '/service/name': minLength: got 0, want 1", True),
    ("null service name", {"service.name": None}, "at '/service': missing property 'name'", True),
    ("zero prefetch", {"service.prefetch": 0}, "at '/service/prefetch': minimum: got 0, want 1", True),
    ("zero delivery limit", {"service.deliveryLimit": 0}, "at '/service/deliveryLimit': minimum: got 0, want 1", True),
    ("bad digest", {"image.digest": "sha256:nothex"}, "at '/image/digest'", True),
    ("string port", {"service.healthPort": "8080"}, "at '/service/healthPort': got string, want integer", True),
    ("keda unknown kind", {"keda.enabled": True, "keda.kind": "Deployment"}, "at '/keda/kind'", True),
    ("store file not base64", {"passwordStore.files": {"a.gpg": "not base64!"}}, "at '/passwordStore/files/a.gpg'", True),
    (
        "grace period not above drain timeout",
        {"terminationGracePeriodSeconds": 25},
        "terminationGracePeriodSeconds (25) must be greater than service.drainTimeout (25)",
        False,
    ),
    (
        "keda without queue",
        {"keda.enabled": True, "keda.connection.url": "http://u:p@mq:15672/"},
        "keda.queueName is required when keda.enabled is true",
        False,
    ),
    (
        "keda without connection",
        {"keda.enabled": True, "keda.queueName": "q"},
        "keda.connection.existingSecret or keda.connection.url is required",
        False,
    ),
    ("no config host", {"service.configHost": ""}, "at '/service/configHost': minLength: got 0, want 1", True),
    ("no image", {"image.repository": ""}, "image.repository is required", False),
    (
        "two gpg sources",
        {"gpg.existingSecret": "keys"},
        "set exactly one of gpg.existingSecret, gpg.privateKeys, gpg.volume (2 set)",
        False,
    ),
    (
        "no password store",
        {"passwordStore.files": {}},
        "set exactly one of passwordStore.existingSecret, passwordStore.existingConfigMap, passwordStore.files, passwordStore.volume"
        " (0 set)",
        False,
    ),
    ("both pdb bounds", {"pdb.minAvailable": 1, "pdb.maxUnavailable": 1}, "set only one of pdb.minAvailable and pdb.maxUnavailable", False),
    ("monitor without metrics", {"metrics.serviceMonitor.enabled": True}, "metrics.serviceMonitor.enabled needs metrics.enabled", False),
]


@pytest.mark.parametrize(("changes", "message", "by_lint"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_values_fail_clearly(
    render: Callable[[dict[str, Any]], Rendered], changes: dict[str, Any], message: str, by_lint: bool
) -> None:
    values = with_changes(changes)
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as caught:
        render(values)
    assert message in str(caught.value)
    if by_lint:
        report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
        assert any(message in error for error in report["errors"]), report["errors"]


def test_every_problem_is_reported_at_once(render: Callable[[dict[str, Any]], Rendered]) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        render(with_changes({"image.repository": "", "keda.enabled": True, "terminationGracePeriodSeconds": 10}))
    text = str(caught.value)
    for message in ("image.repository is required", "keda.queueName is required", "terminationGracePeriodSeconds (10)"):
        assert message in text


def test_chart_defaults_alone_ask_for_a_service_name() -> None:
    report = helm_python.lint(CHART, strict=True)
    assert any("at '/service/name': minLength: got 0, want 1" in e for e in report["errors"]), report["errors"]


def test_schema_is_strict_draft_07() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    for name in ("service", "image", "gpg", "passwordStore", "keda", "metrics", "livenessProbe", "pdb"):
        assert schema["properties"][name]["additionalProperties"] is False, name
    assert schema["properties"]["replicaCount"]["minimum"] == 0
    assert "name" in schema["properties"]["service"]["required"]


# --------------------------------------------------------------------------- values table


def run_table(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chart_values_table.py"), *args], capture_output=True, text=True, timeout=60
    )


def test_values_table_is_up_to_date() -> None:
    result = run_table("--check")
    assert result.returncode == 0, result.stderr


def test_values_table_check_catches_drift(tmp_path: Path) -> None:
    copy_dir = tmp_path / "chart"
    shutil.copytree(CHART, copy_dir)
    values = copy_dir / "values.yaml"
    original = values.read_text()

    values.write_text(original.replace("## @param service.prefetch ", "## @param service.prefetch Changed; "))
    result = run_table("--check", str(copy_dir))
    assert result.returncode == 1 and "values table is out of date" in result.stderr

    values.write_text("\n".join(line for line in original.splitlines() if "@param service.prefetch " not in line) + "\n")
    result = run_table("--check", str(copy_dir))
    assert result.returncode == 1 and "`service.prefetch` has no `## @param` comment" in result.stderr

    values.write_text(original + "## @param service.nothing A value that does not exist\n")
    result = run_table("--check", str(copy_dir))
    assert result.returncode == 1 and "`@param service.nothing` names no value" in result.stderr

    values.write_text(original)
    assert run_table(str(copy_dir)).returncode == 0  # write mode on an untouched copy changes nothing
    assert (copy_dir / "README.md").read_text() == (CHART / "README.md").read_text()
