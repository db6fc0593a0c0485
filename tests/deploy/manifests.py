"""Reading deploy/kubernetes as kustomize would, and checking what its objects wire together.

`variant(folder)` gives the objects `kubectl apply -k folder` would create, for the few
kustomize features these folders use (resources, a `$patch: delete`, a secretGenerator from
an env file, images); anything else is an error here, so that a new feature is taught to this
reader rather than ignored. The Secret is made from `keys.env.example` (its names; the
values are never committed). `wiring_problems(objects)` lists, one line each, every place
where the manifests and the llamaherd configs they carry disagree: ports, probes, the SRV
name, the Secret's keys, the grace period.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llamaherd.config.keys import api_key_secrets
from llamaherd.config.settings import ConfigError, Settings, settings_from_mapping
from llamaherd.server.serve import DRAIN_MARGIN_S

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "Containerfile"
# The Kubernetes release whose schemas the manifests are checked against.
KUBERNETES_VERSION = "1.34.0"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "secretGenerator", "images"}

Obj = dict[str, Any]


def load_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(folder: Path) -> Obj:
    data: Obj = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(data) - KUSTOMIZATION_KEYS
    if unknown:
        raise AssertionError(
            f"{folder}/kustomization.yaml uses {sorted(unknown)}: teach tests/deploy/manifests.py"
        )
    return data


def variant(folder: Path) -> list[Obj]:
    """The objects kustomize builds from `folder` (see the module's docstring)."""
    spec = kustomization(folder)
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        objects += variant(path) if path.is_dir() else load_documents(path)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise AssertionError(f"{folder}: only patches given by path are read here: {patch}")
        for doc in load_documents(folder / patch["path"]):
            if doc.get("$patch") != "delete":
                raise AssertionError(f"{folder}: only `$patch: delete` is read here")
            before = len(objects)
            objects = [obj for obj in objects if _ident(obj) != _ident(doc)]
            if len(objects) == before:
                raise AssertionError(f"{folder}: {patch['path']} deletes nothing: {_ident(doc)}")
    for generator in spec.get("secretGenerator", []):
        objects.append(_generated_secret(folder, generator))
    for image in spec.get("images", []):
        for container in _all_containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return objects


def _ident(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("name", ""), meta.get("namespace", ""))


def _generated_secret(folder: Path, generator: Obj) -> Obj:
    if set(generator) - {"name", "namespace", "envs"}:
        raise AssertionError(f"{folder}: secretGenerator keys not read here: {generator}")
    data: dict[str, str] = {}
    for env in generator["envs"]:
        # The env file itself holds keys and is never committed; its example names them.
        for name in env_file_names(folder / f"{env}.example"):
            data[name] = base64.b64encode(f"{name.lower()}-value".encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": generator["name"], "namespace": generator["namespace"]},
        "type": "Opaque",
        "data": data,
    }


def env_file_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.append(line.split("=", 1)[0].strip())
    return names


def _all_containers(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield from obj["spec"]["template"]["spec"]["containers"]


def image_uid() -> int:
    """The user the image runs as (the Containerfile's last USER, uid:gid)."""
    users = re.findall(r"^USER\s+(\d+)(?::\d+)?\s*$", CONTAINERFILE.read_text(), re.MULTILINE)
    return int(users[-1])


# What one workload carries, read from its manifests.
@dataclass(frozen=True)
class Workload:
    obj: Obj
    container: Obj
    settings: Settings
    config_map: str

    @property
    def name(self) -> str:
        return f"{self.obj['kind']} {self.obj['metadata']['name']}"

    @property
    def pod(self) -> Obj:
        spec: Obj = self.obj["spec"]["template"]["spec"]
        return spec

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.obj["spec"]["template"]["metadata"]["labels"]
        return labels

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def port(self, ref: int | str) -> int | None:
        """A container port by its name, or the number itself."""
        if isinstance(ref, int):
            return ref
        for port in self.container.get("ports", []):
            if port.get("name") == ref:
                return int(port["containerPort"])
        return None

    def mounts(self) -> dict[str, str]:
        return {m["mountPath"]: m["name"] for m in self.container.get("volumeMounts", [])}


def find(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def _config_of(obj: Obj, container: Obj, objects: list[Obj]) -> tuple[Settings, str]:
    """The settings in the ConfigMap mounted where the container's --config points."""
    where = f"{obj['kind']} {obj['metadata']['name']}"
    args = [*container.get("command", []), *container.get("args", [])]
    if "--config" not in args:
        raise AssertionError(f"{where}: no --config in its command and args")
    path = Path(args[args.index("--config") + 1])
    mount = next(
        (m for m in container.get("volumeMounts", []) if m["mountPath"] == str(path.parent)),
        None,
    )
    if mount is None:
        raise AssertionError(f"{where}: nothing is mounted at {path.parent}")
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"].get("volumes", [])}
    volume = volumes.get(mount["name"], {})
    if "configMap" not in volume:
        raise AssertionError(f"{where}: {path.parent} is not a ConfigMap")
    name = volume["configMap"]["name"]
    config_map = find(objects, "ConfigMap", name)
    if config_map is None or path.name not in config_map.get("data", {}):
        raise AssertionError(f"{where}: ConfigMap {name} has no {path.name}")
    raw = json.loads(config_map["data"][path.name])
    return settings_from_mapping(raw, source=f"ConfigMap {name}"), name


def workloads(objects: list[Obj]) -> list[Workload]:
    found = []
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        containers = obj["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, f"{obj['metadata']['name']}: one container expected"
        settings, config_map = _config_of(obj, containers[0], objects)
        found.append(Workload(obj, containers[0], settings, config_map))
    return found


def key_envs(settings: Settings) -> set[str]:
    """Every environment variable a config names for a key."""
    names = {entry.key_env for entry in settings.api_keys if entry.key_env}
    names |= {peer.key_env for peer in settings.peers if peer.key_env}
    if settings.peers_dns_key_env:
        names.add(settings.peers_dns_key_env)
    return names


def headless_service_of(workload: Workload, objects: list[Obj]) -> Obj | None:
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "Service" and spec.get("clusterIP") == "None":
            selector = spec.get("selector", {})
            if selector and selector.items() <= workload.labels.items():
                return obj
    return None


def srv_name(service: Obj, port_name: str = "http") -> str | None:
    """The SRV name a headless Service's named TCP port gets in the cluster's DNS."""
    for port in service["spec"]["ports"]:
        if port.get("name") == port_name:
            protocol = port.get("protocol", "TCP").lower()
            meta = service["metadata"]
            return f"_{port_name}._{protocol}.{meta['name']}.{meta['namespace']}.svc.cluster.local"
    return None


def _prestop_sleep_s(container: Obj) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if command and command[0] == "sleep":
        return float(command[1])
    return 0.0


def _check_workload(w: Workload, objects: list[Obj]) -> Iterator[str]:
    s = w.settings
    if s.app_host != "0.0.0.0":
        yield f"{w.name}: app_host is {s.app_host}; in a pod it must listen on 0.0.0.0"
    ports = [p for p in w.container.get("ports", []) if p.get("name") == "http"]
    if [p["containerPort"] for p in ports] != [s.app_port]:
        yield f"{w.name}: container port http is {ports}, app_port is {s.app_port}"
    for kind in ("readinessProbe", "livenessProbe"):
        probe = w.container.get(kind, {}).get("httpGet")
        if probe is None:
            yield f"{w.name}: no {kind} by HTTP"
            continue
        if probe.get("path") != "/healthz":
            yield f"{w.name}: {kind} asks {probe.get('path')}, not /healthz"
        if w.port(probe.get("port", "")) != s.app_port:
            yield f"{w.name}: {kind} asks port {probe.get('port')}, not app_port {s.app_port}"
    grace = w.pod.get("terminationGracePeriodSeconds", 30)
    longest = _prestop_sleep_s(w.container) + s.shutdown_drain_s + DRAIN_MARGIN_S + s.stop_timeout_s
    if grace <= longest:
        yield (
            f"{w.name}: terminationGracePeriodSeconds {grace} is not longer than its stop "
            f"(preStop, shutdown_drain_s {s.shutdown_drain_s}, margin, stop_timeout_s): {longest}"
        )
    yield from _check_keys(w, objects)
    mounts = w.mounts()
    for key in ("state_dir", "models_dir"):
        folder = getattr(s, key)
        if folder is not None and str(folder) not in mounts:
            yield f"{w.name}: {key} {folder} is not a volume mount"
    pod_security = w.pod.get("securityContext", {})
    if not pod_security.get("runAsNonRoot") or pod_security.get("runAsUser") != image_uid():
        yield f"{w.name}: runs as {pod_security}, not as the image's user {image_uid()}"
    if w.obj["spec"]["selector"]["matchLabels"].items() > w.labels.items():
        yield f"{w.name}: its selector does not select its own pods"


def _check_keys(w: Workload, objects: list[Obj]) -> Iterator[str]:
    from_secret: dict[str, tuple[str, str]] = {}
    for env in w.container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            from_secret[env["name"]] = (ref["name"], ref["key"])
    named = key_envs(w.settings)
    if named != set(from_secret):
        yield (
            f"{w.name}: the config names the key variables {sorted(named)}, the pod sets "
            f"{sorted(from_secret)} from a Secret"
        )
    for env_name, (secret_name, key) in sorted(from_secret.items()):
        secret = find(objects, "Secret", secret_name)
        if secret is None or key not in secret.get("data", {}):
            yield f"{w.name}: {env_name} comes from Secret {secret_name} key {key}, not there"
        elif key != env_name:
            yield f"{w.name}: {env_name} comes from the Secret's {key}: name them alike"
    environ = {name: f"{name.lower()}-0123456789abcdef" for name in from_secret}
    try:
        api_key_secrets(w.settings, environ=environ)
    except ConfigError as exc:
        yield f"{w.name}: llamaherd would refuse its keys: {exc}"
    if not w.settings.api_keys:
        yield f"{w.name}: no api_keys: llamaherd refuses to listen on 0.0.0.0 without keys"


def _check_workers(workers: list[Workload], objects: list[Obj]) -> Iterator[str]:
    for w in workers:
        service = headless_service_of(w, objects)
        if service is None:
            yield f"{w.name}: no headless Service selects the workers"
            continue
        if (
            w.obj["kind"] == "StatefulSet"
            and w.obj["spec"].get("serviceName") != (service["metadata"]["name"])
        ):
            yield f"{w.name}: serviceName is not {service['metadata']['name']}"
        for port in service["spec"]["ports"]:
            if w.port(port.get("targetPort", port["port"])) != w.settings.app_port:
                yield f"Service {service['metadata']['name']}: targetPort misses app_port"


def _check_fronts(
    fronts: list[Workload], workers: list[Workload], objects: list[Obj]
) -> Iterator[str]:
    worker_admin_keys = {
        entry.key_env
        for w in workers
        for entry in w.settings.api_keys
        if entry.key_env and "admin" in entry.scopes
    }
    for front in fronts:
        s = front.settings
        if s.models or s.models_dir or s.llama_model_path:
            yield f"{front.name}: a front here has no models of its own"
        if front.obj["kind"] == "Deployment" and front.obj["spec"].get("replicas") != 2:
            yield f"{front.name}: two replicas expected"
        for w in workers:
            service = headless_service_of(w, objects)
            expected = srv_name(service) if service is not None else None
            if s.peers_dns != expected:
                yield f"{front.name}: peers_dns is {s.peers_dns}, the workers' SRV is {expected}"
        if s.peers_dns_key_env not in worker_admin_keys:
            yield (
                f"{front.name}: peers_dns_key_env {s.peers_dns_key_env} is none of the "
                f"workers' admin keys {sorted(worker_admin_keys)}"
            )
        services = [
            o
            for o in objects
            if o["kind"] == "Service"
            and o["spec"].get("clusterIP") != "None"
            and o["spec"].get("selector", {}).items() <= front.labels.items()
        ]
        if not services:
            yield f"{front.name}: no Service in front of it"
        for service in services:
            for port in service["spec"]["ports"]:
                if front.port(port.get("targetPort", port["port"])) != s.app_port:
                    yield f"Service {service['metadata']['name']}: targetPort misses app_port"


def wiring_problems(objects: list[Obj]) -> list[str]:
    """Every disagreement between the manifests and the configs they carry, one line each."""
    found = workloads(objects)
    workers = [w for w in found if w.component == "worker"]
    fronts = [w for w in found if w.component == "front"]
    problems: list[str] = []
    if not workers or not fronts:
        problems.append(f"workers {len(workers)} and fronts {len(fronts)}: both expected")
    for w in found:
        problems += _check_workload(w, objects)
    problems += _check_workers(workers, objects)
    problems += _check_fronts(fronts, workers, objects)
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    for obj in objects:
        if obj["kind"] != "Namespace" and obj["metadata"].get("namespace") not in namespaces:
            problems.append(f"{_ident(obj)}: not in the namespace the manifests create")
    return problems
