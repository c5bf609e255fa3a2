"""The manifests and the image agree with the code they deploy: ports, probe paths the app really serves, env
names the settings really read, the store's mount, and the objects that point at each other.

Everything on the code side is read from the code itself (service.settings, service.app's routes,
service.metrics), so a rename there fails here.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase

from tests.deploy.dockerfile_instructions import healthcheck_command, read_instructions
from tests.deploy.k8s_objects import DEPLOY, REPO, Manifest, find
from vitserve.model_store.store import ROOT_ENV
from vitserve.service.app import create_app
from vitserve.service.core.metrics import Metrics
from vitserve.service.settings import Settings, load_settings

SERVING = ("overlays/cpu", "overlays/ascend")
TRAINING = ("training/single-node", "training/two-node")


def pod_spec(obj: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: Manifest) -> dict[str, Any]:
    (only,) = pod_spec(obj)["containers"]
    return only


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {prefix + name.upper() for name in Settings.model_fields}


def script_env_names() -> set[str]:
    """VITSERVE_* variables the deploy scripts themselves read (start.sh's VITSERVE_BOOTSTRAP, ...)."""
    text = "\n".join(p.read_text() for p in (DEPLOY / "scripts").glob("*.sh"))
    return set(re.findall(r"\$\{?(VITSERVE_[A-Z0-9_]+)", text))


def dockerfile_env() -> dict[str, str]:
    envs = [i for i in read_instructions(REPO / "Dockerfile") if i.keyword == "ENV"]
    return dict(word.split("=", 1) for i in envs for word in i.exec_form())


def settings_data(objects: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", "vitserve-settings")["data"]
    return data


@pytest.fixture(scope="module")
def app_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The real app's answer (status) to a GET of each path the deploy files probe or scrape.

    In-process, without the lifespan: no model is loaded, so the process is alive but not ready.
    """
    app = create_app(load_settings(store_root=tmp_path_factory.mktemp("store")))
    asked = ("/healthz", "/readyz", "/metrics", "/no-such-path")

    async def get_all() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://vitserve") as client:
            return {path: (await client.get(path)).status_code for path in asked}

    statuses = asyncio.run(get_all())
    assert statuses["/no-such-path"] == 404, "the check below relies on unknown paths answering 404"
    return {path: status for path, status in statuses.items() if status != 404}


@pytest.mark.parametrize("build", SERVING)
def test_ports_line_up(rendered: dict[str, list[Manifest]], build: str) -> None:
    objects = rendered[build]
    deployment, service = find(objects, "Deployment"), find(objects, "Service", "vitserve")
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    target = service["spec"]["ports"][0]["targetPort"]
    resolved = ports[target] if isinstance(target, str) else target
    default_port = Settings.model_fields["port"].default
    assert resolved == ports["http"] == int(settings_data(objects)["VITSERVE_PORT"]) == default_port
    assert int(dockerfile_env()["VITSERVE_PORT"]) == default_port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container(deployment)[probe]["httpGet"]["port"] in (ports["http"], "http")


@pytest.mark.parametrize("build", SERVING)
def test_probe_paths_are_routes_the_app_serves(
    rendered: dict[str, list[Manifest]], build: str, app_paths: dict[str, int]
) -> None:
    c = container(find(rendered[build], "Deployment"))
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    paths = {c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    paths.add(find(rendered[build], "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    assert paths <= app_paths.keys(), f"not served by the app: {paths - app_paths.keys()}"
    # Alive without a model, not ready without one: the probes mean what the manifests rely on.
    assert (app_paths["/healthz"], app_paths["/readyz"]) == (200, 503)


def test_the_image_healthcheck_asks_a_served_path(app_paths: dict[str, int]) -> None:
    (check,) = [i for i in read_instructions(REPO / "Dockerfile") if i.keyword == "HEALTHCHECK"]
    asked = re.findall(r"http://127\.0\.0\.1:%s(/\w+)", healthcheck_command(check)[2])
    assert asked == ["/healthz"] and app_paths["/healthz"] == 200


def test_env_names_are_ones_the_code_reads(rendered: dict[str, list[Manifest]]) -> None:
    known = settings_env_names() | script_env_names() | {ROOT_ENV}
    used: set[str] = set(dockerfile_env())
    for build in (*SERVING, *TRAINING):
        for obj in rendered[build]:
            if obj["kind"] == "ConfigMap":
                used |= set(obj["data"])
            if obj["kind"] in {"Deployment", "Job"}:
                used |= {e["name"] for e in container(obj).get("env", [])}
    vitserve_names = {n for n in used if n.startswith("VITSERVE_")}
    assert vitserve_names, "no settings found: the check would pass vacuously"
    assert vitserve_names <= known, f"read by nothing: {sorted(vitserve_names - known)}"


@pytest.mark.parametrize("build", SERVING)
def test_configmap_values_are_valid_settings(
    rendered: dict[str, list[Manifest]], build: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service validates its settings at start-up; a bad value here would be a crash-looping rollout.
    for name in settings_env_names():
        monkeypatch.delenv(name, raising=False)
    for key, value in settings_data(rendered[build]).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert str(settings.store_root) == settings_data(rendered[build])["VITSERVE_STORE_ROOT"]


@pytest.mark.parametrize("build", SERVING)
def test_store_volume_is_mounted_at_the_store_root(rendered: dict[str, list[Manifest]], build: str) -> None:
    objects = rendered[build]
    deployment, pvc = find(objects, "Deployment"), find(objects, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "every replica and the trainer share the store"
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
    store_root = settings_data(objects)["VITSERVE_STORE_ROOT"]
    assert mount["mountPath"] == store_root == dockerfile_env()["VITSERVE_STORE_ROOT"]
    assert not mount.get("readOnly"), "the admin API publishes into the store"


@pytest.mark.parametrize("build", SERVING)
def test_the_temporary_directory_is_bounded_and_holds_what_bodies_may_spill(
    rendered: dict[str, list[Manifest]], build: str
) -> None:
    objects = rendered[build]
    deployment = find(objects, "Deployment")
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    size = volume["emptyDir"]["sizeLimit"]
    assert size.endswith("Gi"), size
    data = settings_data(objects)
    spill = sum(
        int(data.get(f"VITSERVE_{name.upper()}", Settings.model_fields[name].default))
        for name in ("max_bodies_bytes", "max_upload_bytes")
    )
    assert int(size[:-2]) * 1024**3 >= spill


@pytest.mark.parametrize("build", TRAINING)
def test_training_publishes_into_the_serving_store(rendered: dict[str, list[Manifest]], build: str) -> None:
    job = find(rendered[build], "Job")
    claim = find(rendered["base"], "PersistentVolumeClaim")["metadata"]["name"]
    (volume,) = [v for v in pod_spec(job)["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    (mount,) = [m for m in container(job)["volumeMounts"] if m["name"] == volume["name"]]
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert mount["mountPath"] == env[ROOT_ENV] == settings_data(rendered["base"])["VITSERVE_STORE_ROOT"]
    # The trainer publishes where it is told: its --store argument.
    assert f"--store={mount['mountPath']}" in container(job)["args"]


@pytest.mark.parametrize("build", SERVING)
def test_selectors_and_targets_point_at_the_serving_pods(rendered: dict[str, list[Manifest]], build: str) -> None:
    objects = rendered[build]
    deployment = find(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(find(objects, "Service", "vitserve")["spec"]["selector"])
    assert selects(find(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    hpa = find(objects, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 3
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    # The serving Service must not send traffic to training pods.
    trainer = find(rendered["training/single-node"], "Job")["spec"]["template"]["metadata"]["labels"]
    assert not find(objects, "Service", "vitserve")["spec"]["selector"].items() <= trainer.items()


@pytest.mark.parametrize("build", SERVING)
def test_referenced_config_and_secret_exist(rendered: dict[str, list[Manifest]], build: str) -> None:
    objects = rendered[build]
    c = container(find(objects, "Deployment"))
    for source in c["envFrom"]:
        find(objects, "ConfigMap", source["configMapRef"]["name"])
    refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert [r["key"] for r in refs] == ["VITSERVE_ADMIN_TOKEN"]
    for ref in refs:
        find(objects, "Secret", ref["name"])
        assert ref["optional"] is True, "no token → admin routes off, not a failed pod"


@pytest.mark.parametrize("build", SERVING)
def test_shutdown_fits_in_the_grace_period(rendered: dict[str, list[Manifest]], build: str) -> None:
    objects = rendered[build]
    deployment = find(objects, "Deployment")
    pre_stop = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    default_drain = Settings.model_fields["drain_timeout_s"].default
    drain = float(settings_data(objects).get("VITSERVE_DRAIN_TIMEOUT_S", default_drain))
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > pre_stop + drain + 5, f"grace {grace} s vs preStop {pre_stop} s + drain {drain} s"
    startup = container(deployment)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "room for load + graph compilation"


def test_queue_depth_autoscaling_uses_a_gauge_the_service_exports(rendered: dict[str, list[Manifest]]) -> None:
    metrics = Metrics()
    gauges = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase) and m._type == "gauge"}
    (metric,) = find(rendered["overlays/ascend"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name in gauges, f"{name} is not one of the service's gauges {sorted(gauges)}"
    # The documented prometheus-adapter rule publishes the same series.
    rule = (DEPLOY / "components" / "hpa-queue-depth" / "kustomization.yaml").read_text()
    assert f"seriesQuery: '{name}{{" in rule


def test_ascend_overlay_targets_the_npu(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["overlays/ascend"]
    deployment = find(objects, "Deployment")
    assert settings_data(objects)["VITSERVE_DEVICE_TARGET"] == "Ascend"
    assert container(deployment)["resources"]["limits"]["huawei.com/Ascend910"] == "1"
    assert container(deployment)["image"].endswith(":ascend")
    assert container(find(rendered["overlays/cpu"], "Deployment"))["image"].endswith(":cpu")


def test_two_node_training_wires_rank_zero_as_master(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["training/two-node"]
    job, headless = find(objects, "Job"), find(objects, "Service", "vitserve-train")
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    nodes = int(env["NUM_NODES"])
    assert nodes == 2 and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    assert pod_spec(job)["subdomain"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    # An Indexed Job's pod i has hostname <job>-<i>; under the subdomain, node 0 resolves by that name.
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{headless['metadata']['name']}"
    assert [p["port"] for p in headless["spec"]["ports"]] == [int(env["MASTER_PORT"])]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()


def test_every_script_the_manifests_run_exists(rendered: dict[str, list[Manifest]]) -> None:
    for build in (*SERVING, *TRAINING):
        for obj in rendered[build]:
            if obj["kind"] not in {"Deployment", "Job"}:
                continue
            for word in container(obj).get("command", []) + container(obj).get("args", []):
                if word.startswith("/opt/vitserve/scripts/"):
                    assert (DEPLOY / "scripts" / Path(word).name).is_file(), word


def test_pods_run_as_the_image_user(rendered: dict[str, list[Manifest]]) -> None:
    args = [i.args for i in read_instructions(REPO / "Dockerfile") if i.keyword == "ARG"]
    uid = int(next(a.split("=", 1)[1] for a in args if a.startswith("VITSERVE_UID=")))
    for build in (*SERVING, *TRAINING):
        for obj in rendered[build]:
            if obj["kind"] in {"Deployment", "Job"}:
                context = pod_spec(obj)["securityContext"]
                assert context["runAsNonRoot"] is True
                # fsGroup: files the trainer publishes stay readable and writable by the serving pods.
                assert context["runAsUser"] == context["fsGroup"] == uid, build


def test_service_links_cannot_shadow_the_settings(rendered: dict[str, list[Manifest]]) -> None:
    # Kubernetes injects <SERVICE>_PORT=tcp://ip:port, <SERVICE>_SERVICE_HOST, ... for every Service in the
    # namespace; a Service named vitserve* yields VITSERVE_PORT=tcp://..., which the settings reject.
    prefix = Settings.model_config.get("env_prefix", "")
    services = {o["metadata"]["name"] for b in rendered.values() for o in b if o["kind"] == "Service"}
    link_prefixes = {name.upper().replace("-", "_") + "_" for name in services}
    assert any(p.startswith(prefix) for p in link_prefixes), "no colliding Service: the check below would be idle"
    for build in (*SERVING, *TRAINING):
        for obj in rendered[build]:
            if obj["kind"] in {"Deployment", "Job"}:
                assert pod_spec(obj).get("enableServiceLinks") is False, f"{build}: {obj['kind']}"
