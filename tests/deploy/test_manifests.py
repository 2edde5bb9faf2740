"""Static checks of the deployment artifacts: every YAML parses; the compose file's structure
(services, profiles, GPU reservations, volumes, health checks, no literal secrets); every
Kubernetes manifest against the Kubernetes schemas (kubernetes-validate, offline, strict); the
Dockerfile installs like .ci/run and its entry points exist and start the right programs.

``docker compose config`` runs too when the ``docker compose`` plugin (v2) is installed; otherwise
the structural checks below stand in for it (no offline compose-spec validator on PyPI installs
next to this project's dependencies).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from workers.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"

# FEATUREEDIT_* variables read outside the two Settings classes (README's global options,
# the fingerprint key, and the image's entrypoint).
OTHER_VARIABLES = {
    "FEATUREEDIT_HOME",
    "FEATUREEDIT_DEVICE",
    "FEATUREEDIT_DTYPE",
    "FEATUREEDIT_REGISTRY",
    "FEATUREEDIT_FINGERPRINT_KEY",
    "FEATUREEDIT_API_WORKERS",
}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|_KEY$|TOKEN", re.IGNORECASE)
_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose-style ``${VAR:-default}`` with the defaults (the variables unset)."""
    return _INTERP.sub(lambda m: m.group(2) or "", value)


def _known_variables() -> set[str]:
    names = {f"FEATUREEDIT_{n.upper()}" for n in Settings.model_fields}
    names |= {f"FEATUREEDIT_WORKER_{n.upper()}" for n in WorkerSettings.model_fields}
    return names | OTHER_VARIABLES


def _featureedit_parser():
    from editing.cli import build_parser

    return build_parser()


# ----------------------------------------------------------------------------- every YAML
def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


# ----------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file, parsed (anchors and merge keys resolved by the YAML loader)."""
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services_profiles_and_gpu_reservation(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "api", "worker", "worker-gpu", "minio", "minio-init"} <= set(services)
    for name in ("redis", "api", "worker"):
        assert "profiles" not in services[name], f"{name} must run by default"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["minio"]["profiles"] == services["minio-init"]["profiles"] == ["s3"]

    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])

    assert int(_interpolate(str(services["worker"]["deploy"]["replicas"]))) >= 2
    gpu = services["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")

    for name in ("redis", "api", "worker", "worker-gpu", "minio"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_volumes_share_the_store_and_are_declared(compose: dict[str, Any]) -> None:
    services, declared = compose["services"], set(compose["volumes"])
    used: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("$", ".", "/")):
                used.add(source)
        if name in ("api", "worker", "worker-gpu"):
            env = service["environment"]
            mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
            assert mounts[env["FEATUREEDIT_STORE_ROOT"]] == "store", name
            assert mounts[env["FEATUREEDIT_HOME"]] == "home", name
            assert env["FEATUREEDIT_STORE_BACKEND"].startswith("${FEATUREEDIT_STORE_BACKEND")
            assert env["FEATUREEDIT_S3_ENDPOINT_URL"].endswith("http://minio:9000}")
    assert used <= declared, f"undeclared volumes: {used - declared}"
    for secret in compose["secrets"].values():
        assert (DEPLOY / secret["file"]).parent.name == "secrets"


def test_compose_holds_no_literal_secret_and_names_only_real_settings(
    compose: dict[str, Any],
) -> None:
    known = _known_variables()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_FILE"):
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}"
            elif SECRET_NAME.search(key):
                pytest.fail(f"{name}: secret {key} must come from .env or a secret file")
            if key.startswith("FEATUREEDIT_"):
                assert key in known, f"{name}: {key} is not a featureedit setting"
    compose_variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    env_example = (DEPLOY / "env.example").read_text()
    for line in env_example.splitlines():
        key, _, value = line.partition("=")
        if line.startswith("#") or not value:
            continue
        if key.startswith("FEATUREEDIT_"):
            assert key in known | compose_variables, f"env.example: {key} is not used"
        if SECRET_NAME.search(key):
            assert value == "REPLACE_ME", f"env.example: {key} must be a placeholder"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/.env" in ignored and "deploy/secrets/" in ignored


def test_compose_commands_are_featureedit_commands(compose: dict[str, Any]) -> None:
    parser = _featureedit_parser()
    for name in ("worker", "worker-gpu"):
        argv = [_interpolate(a) for a in compose["services"][name]["command"]]
        args = parser.parse_args(argv)
        assert args.func.__name__ == "cmd_worker", name
    gpu = parser.parse_args([_interpolate(a) for a in compose["services"]["worker-gpu"]["command"]])
    assert gpu.classes == "gpu-24g" and gpu.device == "cuda:0"
    assert compose["services"]["api"]["command"] == ["api"]


def _compose_binary() -> list[str] | None:
    """``docker compose`` (v2: the file uses ``env_file.path``/``required``, which v1 lacks)."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no `docker compose` (v2) here; the structural checks above ran")
    for profiles in ([], ["--profile", "gpu", "--profile", "s3"]):
        result = subprocess.run(
            [*binary, "-f", str(COMPOSE), *profiles, "config", "--quiet"],
            capture_output=True,
            text=True,
            cwd=DEPLOY,
        )
        assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- Kubernetes
def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


@pytest.mark.parametrize("doc", [d for _, d in _k8s_docs()], ids=[i for i, _ in _k8s_docs()])
def test_kubernetes_manifest_matches_the_schema(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema violation


def test_kubernetes_validation_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    (_, api), *_ = [(i, d) for i, d in _k8s_docs() if i.startswith("api.yaml:Deployment")]
    broken = yaml.safe_load(yaml.safe_dump(api))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            broken, kubernetes_validate.utils.latest_version(), strict=True
        )


def _by_name() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for _, d in _k8s_docs()}


def test_kustomization_lists_existing_files() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]


def test_api_probes_hit_real_routes_and_the_service_selects_the_pods(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from service.main import create_app

    docs = _by_name()
    api = docs["Deployment/featureedit-api"]
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["api"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    settings = Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0")  # Redis down
    with TestClient(create_app(settings)) as client:
        assert client.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200
        assert client.get(container["readinessProbe"]["httpGet"]["path"]).status_code == 503
    service = docs["Service/featureedit-api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_gpu_worker_holds_a_gpu_and_outlives_a_job() -> None:
    docs = _by_name()
    (worker,) = [d for k, d in docs.items() if k.startswith("Deployment/featureedit-worker")]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    config = docs["ConfigMap/featureedit-config"]["data"]
    job_timeout = int(config["FEATUREEDIT_JOB_TIMEOUT"])
    assert job_timeout == Settings().job_timeout  # the default the grace period is derived from
    assert pod["terminationGracePeriodSeconds"] >= job_timeout + 60
    args = _featureedit_parser().parse_args(container["args"])
    assert args.func.__name__ == "cmd_worker" and args.classes == "gpu-24g"
    classes = Settings(queue_classes=__import__("json").loads(config["FEATUREEDIT_QUEUE_CLASSES"]))
    assert "gpu-24g" in classes.queue_classes.values()
    probe = container["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["python", "-m", "workers.healthcheck"]


def test_k8s_settings_are_real_and_secrets_are_placeholders() -> None:
    docs = _by_name()
    known = _known_variables()
    for key in docs["ConfigMap/featureedit-config"]["data"]:
        if key.startswith("FEATUREEDIT_"):
            assert key in known, f"configmap: {key} is not a featureedit setting"
        assert not SECRET_NAME.search(key) or key.endswith("_DIR"), f"secret {key} in a ConfigMap"
    secrets = [d for k, d in docs.items() if k.startswith("Secret/")]
    assert secrets
    for secret in secrets:
        for key, value in secret["stringData"].items():
            assert "REPLACE" in value or value.endswith('"keys": []}'), (
                f"{key} is not a placeholder"
            )
    for kind in ("Deployment/featureedit-api", "Deployment/featureedit-worker-gpu-24g"):
        (container,) = docs[kind]["spec"]["template"]["spec"]["containers"]
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"featureedit-config", "featureedit-secrets"}
    assert any(
        d["kind"] == "StatefulSet" and d["spec"]["volumeClaimTemplates"] for d in docs.values()
    )


# ----------------------------------------------------------------------------- Dockerfile
def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_is_multistage_non_root_with_a_switchable_base_and_healthcheck() -> None:
    lines = _dockerfile()
    assert sum(ln.startswith("FROM ") for ln in lines) >= 3
    base = next(ln for ln in lines if ln.startswith("ARG BASE_IMAGE="))
    assert re.fullmatch(r"ARG BASE_IMAGE=python:3\.1[1-9]-slim", base)
    assert all(ln.split()[1] in ("${BASE_IMAGE}", "base") for ln in lines if ln.startswith("FROM"))
    (user,) = [ln for ln in lines if ln.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    (health,) = [ln for ln in lines if ln.startswith("HEALTHCHECK ")]
    assert '"workers.healthcheck"' in health
    import workers.healthcheck  # noqa: F401  (the module the check runs)

    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            sources = [a for a in shlex.split(line)[1:-1] if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY source {source} is missing"


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"torch\s*==", d)]
    return pin.replace(" ", "")


def test_dockerfile_installs_the_project_like_ci_with_the_pinned_torch() -> None:
    run = "\n".join(ln for ln in _dockerfile() if ln.startswith("RUN "))
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install \.(\s|$|;|&)", run), "the image must pip install the project"
    assert re.search(r"pip install (--quiet )?-e '\.\[dev\]'", ci), ".ci/run's install changed"
    pin = _torch_pin()
    # The image never pins torch itself: any torch version it names is pyproject's.
    for version in re.findall(r"torch==([0-9][^\s\"']*)", run):
        assert f"torch=={version}" == pin
    grep = re.search(r"torch_pin=\"\$\((.*?)\)\"", run)
    assert grep, "the alternative-index install must read the pin from pyproject.toml"
    got = subprocess.run(
        ["sh", "-c", grep.group(1)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert got.stdout.strip() == pin


def test_entrypoint_starts_uvicorn_for_api_and_the_worker_command_for_worker() -> None:
    text = ENTRYPOINT.read_text()
    assert os.access(ENTRYPOINT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)]).returncode == 0
    app = re.search(r"exec uvicorn (\S+) --factory", text)
    assert app and app.group(1) == "service.main:create_app"
    from service.main import create_app  # noqa: F401

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    worker = subprocess.run(
        [str(ENTRYPOINT), "worker", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode == 0 and "--classes" in worker.stdout, worker.stderr
    api = subprocess.run(
        [str(ENTRYPOINT), "api", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert api.returncode == 0 and "--factory" in api.stdout, api.stderr
