"""deploy/kubernetes: every manifest is valid for a pinned Kubernetes release (checked offline
with kubernetes-validate, strictly: an unknown field is an error), and what the manifests wire
together matches the llamaherd configs they carry: the configs load, the fronts' SRV name is
the headless Service's, the Secret holds every key a config names, ports and probes meet
app_port, the grace period outlasts the drain. The checks are shown to catch each mistake."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    KUBERNETES,
    KUBERNETES_VERSION,
    Obj,
    env_file_names,
    find,
    kustomization,
    load_documents,
    variant,
    wiring_problems,
    workloads,
)

BASE = KUBERNETES / "base"
GPU = KUBERNETES / "gpu"
MANIFESTS = sorted(
    path
    for path in KUBERNETES.rglob("*.yaml")
    if path.name != "kustomization.yaml" and not path.name.startswith("delete-")
)


def _validate(obj: Obj) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_every_manifest_is_valid_for_the_pinned_kubernetes(path: Path) -> None:
    docs = load_documents(path)
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("folder", [BASE, GPU], ids=["base", "gpu"])
def test_every_object_a_variant_makes_is_valid_the_secret_included(folder: Path) -> None:
    objects = variant(folder)
    assert find(objects, "Secret", "llamaherd-keys") is not None
    for obj in objects:
        _validate(obj)


def test_the_validator_refuses_a_wrong_field() -> None:
    """Strict validation is on: a misspelt field fails (so a pass above means something)."""
    deployment = copy.deepcopy(find(variant(BASE), "Deployment", "llamaherd-front"))
    assert deployment is not None
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)


@pytest.mark.parametrize("folder", [BASE, GPU], ids=["base", "gpu"])
def test_what_the_manifests_wire_matches_the_configs_they_carry(folder: Path) -> None:
    assert wiring_problems(variant(folder)) == []


def test_the_base_runs_two_cpu_workers_and_two_fronts_found_by_dns() -> None:
    objects = variant(BASE)
    kinds = {w.obj["kind"]: w for w in workloads(objects)}
    assert set(kinds) == {"StatefulSet", "Deployment"}
    workers, fronts = kinds["StatefulSet"], kinds["Deployment"]
    assert workers.component == "worker" and fronts.component == "front"
    assert fronts.settings.peers_dns == "_http._tcp.llamaherd-workers.llm.svc.cluster.local"
    assert fronts.obj["spec"]["replicas"] == 2
    templates = {t["metadata"]["name"] for t in workers.obj["spec"]["volumeClaimTemplates"]}
    assert templates == {"models", "state"}
    assert {"/models", "/var/lib/llamaherd"} <= set(workers.mounts())
    headless = find(objects, "Service", "llamaherd-workers")
    assert headless is not None and headless["spec"]["clusterIP"] == "None"
    front_service = find(objects, "Service", "llamaherd")
    assert front_service is not None and front_service["spec"]["type"] == "ClusterIP"


def test_the_gpu_variant_puts_a_worker_on_every_gpu_node_instead() -> None:
    objects = variant(GPU)
    assert find(objects, "StatefulSet", "llamaherd-worker") is None
    (worker,) = [w for w in workloads(objects) if w.component == "worker"]
    assert worker.obj["kind"] == "DaemonSet"
    assert worker.container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker.pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    models = next(v for v in worker.pod["volumes"] if v["name"] == worker.mounts()["/models"])
    assert models["hostPath"]["path"]
    assert worker.container["image"].startswith("llamaherd-cuda:")
    assert worker.settings.llama_server_args[:2] == ("-ngl", "999")
    # The same fronts, finding the DaemonSet's pods through the same headless Service.
    assert find(objects, "Deployment", "llamaherd-front") is not None


def test_every_file_is_part_of_a_variant_and_no_key_is_committed() -> None:
    used: set[Path] = set()
    for folder in (BASE, GPU):
        spec = kustomization(folder)
        for entry in spec.get("resources", []):
            used.add((folder / entry).resolve())
        used |= {(folder / p["path"]).resolve() for p in spec.get("patches", [])}
    files = {p.resolve() for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files - used == set()
    assert not (BASE / "keys.env").exists() or "keys.env" not in _tracked(BASE)
    example = BASE / "keys.env.example"
    for line in example.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.endswith("="), f"keys.env.example holds a value: {line}"
    assert env_file_names(example) == [
        "LLAMAHERD_WORKER_KEY",
        "LLAMAHERD_ADMIN_KEY",
        "LLAMAHERD_CLIENT_KEY",
    ]


def _tracked(folder: Path) -> str:
    import subprocess

    return subprocess.run(
        ["git", "ls-files", "."], cwd=folder, capture_output=True, text=True, check=True
    ).stdout


# Each mistake, made on a copy of the base's objects, and a word the problem must name.
def _set_front_config(objects: list[Obj], key: str, value: object) -> None:
    config_map = find(objects, "ConfigMap", "llamaherd-front-config")
    assert config_map is not None
    config = json.loads(config_map["data"]["config.json"])
    config[key] = value
    config_map["data"]["config.json"] = json.dumps(config)


def _container(objects: list[Obj], kind: str) -> Obj:
    obj = next(o for o in objects if o["kind"] == kind)
    container: Obj = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def _rename_headless_port(objects: list[Obj]) -> None:
    service = find(objects, "Service", "llamaherd-workers")
    assert service is not None
    service["spec"]["ports"][0]["name"] = "web"


def _short_grace(objects: list[Obj]) -> None:
    statefulset = find(objects, "StatefulSet", "llamaherd-worker")
    assert statefulset is not None
    statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 40


def _drop_secret_key(objects: list[Obj]) -> None:
    secret = find(objects, "Secret", "llamaherd-keys")
    assert secret is not None
    del secret["data"]["LLAMAHERD_CLIENT_KEY"]


MISTAKES: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "srv name of another service": (
        lambda o: _set_front_config(
            o, "peers_dns", "_http._tcp.llamaherd-other.llm.svc.cluster.local"
        ),
        "peers_dns",
    ),
    "headless port not named http": (_rename_headless_port, "peers_dns"),
    "probe on /health": (
        lambda o: _container(o, "StatefulSet")["livenessProbe"]["httpGet"].update(path="/health"),
        "/healthz",
    ),
    "probe on another port": (
        lambda o: _container(o, "Deployment")["readinessProbe"]["httpGet"].update(port=8080),
        "readinessProbe",
    ),
    "container port not app_port": (
        lambda o: _container(o, "Deployment")["ports"][0].update(containerPort=8080),
        "app_port",
    ),
    "grace shorter than the drain": (_short_grace, "terminationGracePeriodSeconds"),
    "secret without a key": (_drop_secret_key, "LLAMAHERD_CLIENT_KEY"),
    "key variable the pod lacks": (
        lambda o: _set_front_config(o, "peers_dns_key_env", "OTHER_KEY"),
        "OTHER_KEY",
    ),
    "front listening on loopback": (
        lambda o: _set_front_config(o, "app_host", "127.0.0.1"),
        "0.0.0.0",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_wiring_mistake_is_caught(mistake: str) -> None:
    objects = copy.deepcopy(variant(BASE))
    make, word = MISTAKES[mistake]
    make(objects)
    problems = wiring_problems(objects)
    assert any(word in problem for problem in problems), problems


def test_a_config_that_does_not_load_is_caught() -> None:
    objects = copy.deepcopy(variant(BASE))
    _set_front_config(objects, "peers_dns_interval_s", 0)
    with pytest.raises(Exception, match="peers_dns_interval_s"):
        wiring_problems(objects)
