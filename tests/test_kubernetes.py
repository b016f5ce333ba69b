"""deploy/kubernetes: every manifest valid against the Kubernetes schemas bundled in kubernetes-validate (offline),
and consistent with itself, the image (docker/Dockerfile) and the server's own settings parser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, latest_version

from wyoming_minerva.cli import parse_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
# The oldest and the newest schema kubernetes-validate bundles (1.25 … 1.37 in 1.37.0): the manifests use only
# APIs that both know (apps/v1, autoscaling/v2, policy/v1, batch/v1).
VERSIONS = sorted({all_versions()[0], latest_version()})


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(kind: str, name: str, folder: Path = DEPLOY) -> dict[str, Any]:
    for path in sorted(folder.glob("*.yaml")):
        for doc in documents(path):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in {folder}")


def test_there_are_manifests() -> None:
    kinds = {doc["kind"] for path in MANIFESTS for doc in documents(path)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_is_valid_for_kubernetes(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError with the path


def test_a_typo_is_caught_by_the_strict_schemas() -> None:
    deployment = resource("Deployment", "minerva")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a network-less namespace")
def test_validation_needs_no_network() -> None:
    """The command CI can run, in a namespace without any network."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    command = ["unshare", "-rn", sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    result = subprocess.run(
        [*command, "-k", latest_version(), *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout


def test_kustomization_lists_every_top_level_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert [image["name"] for image in kustomization["images"]] == ["wyoming-minerva"]


def test_services_probes_and_ports_agree() -> None:
    deployment = resource("Deployment", "minerva")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 10800, "asr": 10300, "tts": 10200, "wake": 10400}
    for name in ("minerva", "minerva-wyoming"):
        service = resource("Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], port
    assert {p["name"] for p in resource("Service", "minerva")["spec"]["ports"]} == set(ports)
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("10800", "/metrics")


def test_the_configmap_is_a_valid_server_configuration_on_those_ports() -> None:
    config = resource("ConfigMap", "minerva")["data"]
    settings = parse_settings([], config)  # the server's own parser: every variable is a real flag
    assert {service.value: uri.port for service, uri in settings.services.items()} == {
        "asr": 10300,
        "tts": 10200,
        "wake": 10400,
    }
    assert settings.http is not None and settings.http.port == 10800
    assert settings.local_files_only and Path("/models") in settings.data_dirs
    assert not settings.discovery.enabled
    grace = settings.shutdown_grace_seconds
    pod = resource("Deployment", "minerva")["spec"]["template"]["spec"]
    assert grace + 5 < pod["terminationGracePeriodSeconds"]  # preStop sleep + grace fit in the pod's grace


def test_the_image_and_the_deployment_agree() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    exposed = {int(port) for port in re.findall(r"(\d+)/tcp", dockerfile.split("EXPOSE", 1)[1].splitlines()[0])}
    pod = resource("Deployment", "minerva")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {p["containerPort"] for p in container["ports"]} == exposed
    user = re.search(r"^USER (\d+):(\d+)", dockerfile, re.MULTILINE)
    assert user is not None
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == tuple(map(int, user.groups()))
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert container["securityContext"]["readOnlyRootFilesystem"]


def test_requests_and_limits_are_set_from_the_measured_peak() -> None:
    [container] = resource("Deployment", "minerva")["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]

    def mib(value: str) -> int:
        return int(value.removesuffix("Mi")) if value.endswith("Mi") else int(value.removesuffix("Gi")) * 1024

    # 689 MiB VmHWM measured with both bundled STT models, the voice and the wake words loaded (docs/upstream.md)
    assert 689 < mib(resources["requests"]["memory"]) <= mib(resources["limits"]["memory"])
    assert "cpu" in resources["requests"] and "cpu" not in resources["limits"]


def test_autoscaler_and_disruption_budget_target_the_deployment() -> None:
    deployment = resource("Deployment", "minerva")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    queue_hpa = resource("HorizontalPodAutoscaler", "minerva", DEPLOY / "optional")
    for hpa in (resource("HorizontalPodAutoscaler", "minerva"), queue_hpa):
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "minerva"}
        assert hpa["spec"]["minReplicas"] >= 2
    [queue] = [metric for metric in queue_hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    assert queue["pods"]["metric"]["name"] == "minerva_inference_queue_depth"
    pdb = resource("PodDisruptionBudget", "minerva")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < resource("HorizontalPodAutoscaler", "minerva")["spec"]["minReplicas"]
    claim = resource("PersistentVolumeClaim", "minerva-models")["metadata"]["name"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
