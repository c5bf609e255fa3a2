"""Every manifest under deploy/ parses, every Kustomize build renders, and every rendered object validates
against the Kubernetes API's JSON schemas (offline, from the kubernetes-validate package, strict: unknown fields
are errors) for the oldest and newest Kubernetes versions we support."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.deploy.k8s_objects import BUILDS, DEPLOY, Manifest

# 1.30: the oldest release with the preStop `sleep` action on by default; the newest is what the package ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KUSTOMIZE_KINDS = {"Kustomization", "Component"}


def manifest_files() -> list[str]:
    return sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.yaml"))


def referenced_files() -> set[str]:
    """Files that some kustomization names as a resource, patch or component (resolved under deploy/)."""
    named: set[str] = set()
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kfile.read_text())
        entries = [*doc.get("resources", []), *doc.get("components", [])]
        entries += [p["path"] for p in doc.get("patches", []) if "path" in p]
        for entry in entries:
            target = (kfile.parent / entry).resolve()
            if target.is_dir():
                target = target / "kustomization.yaml"
            named.add(str(target.relative_to(DEPLOY)))
    return named


@pytest.mark.parametrize("path", manifest_files())
def test_manifest_parses_into_typed_objects(path: str) -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / path).read_text()) if d is not None]
    assert docs, f"{path} holds no object"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert {"apiVersion", "kind"} <= doc.keys(), f"{path}: apiVersion/kind missing"
        if doc["kind"] not in KUSTOMIZE_KINDS:
            assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} has no metadata.name"


def test_every_manifest_is_part_of_a_build() -> None:
    # A file no kustomization names would never be rendered, so never validated below.
    builds = {f"{b}/kustomization.yaml" for b in BUILDS}
    orphans = set(manifest_files()) - referenced_files() - builds
    assert not orphans, f"manifests outside every build: {sorted(orphans)}"


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_objects_validate_against_the_kubernetes_schemas(
    rendered: dict[str, list[Manifest]], build: str, version: str
) -> None:
    objects = rendered[build]
    assert objects
    for obj in objects:
        # Raises ValidationError (with the failing path) or SchemaNotFoundError for an unknown kind/apiVersion.
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_rejects_a_broken_object(rendered: dict[str, list[Manifest]]) -> None:
    # The check above must be able to fail: a misspelt field in a real Deployment is refused.
    deployment = next(o for o in rendered["overlays/cpu"] if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_names_are_unique_per_kind_in_each_build(rendered: dict[str, list[Manifest]]) -> None:
    for build, objects in rendered.items():
        keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert len(keys) == len(set(keys)), f"{build}: duplicate objects"
