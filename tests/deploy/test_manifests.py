"""Static checks of the deployment artifacts: every YAML parses; the compose file's structure
(services, profiles, GPU reservations, volumes, health checks, no literal secrets); every
Kubernetes manifest against the Kubernetes schemas (kubernetes-validate, offline, strict); the
Dockerfile installs like .ci/run and its entry points exist and start the right programs.

``docker compose config`` runs too when the ``docker compose`` plugin (v2) is installed; otherwise
the structural checks below stand in for it (no offline compose-spec validator on PyPI installs
next to this project's dependencies).
"""

from __future__ import annotations

import json
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


def _subcommand(program: str, subcommand: str, probe: str) -> list[str] | None:
    """``[program, subcommand]`` if ``program subcommand probe`` runs here, else None."""
    path = shutil.which(program)
    if path is None:
        return None
    found = subprocess.run([path, subcommand, probe], capture_output=True, timeout=60)
    return [path, subcommand] if found.returncode == 0 else None


def test_docker_compose_config_accepts_the_file() -> None:
    # compose v2 (the file uses ``env_file.path``/``required``, which v1 lacks)
    binary = _subcommand("docker", "compose", "version")
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


# The worker Deployments, by the queue class each serves. worker-gpu.yaml and worker-cpu.yaml
# are two plain manifests (kustomize has no way to derive one Deployment from another without
# splitting both into a base and overlays); the tests below keep their shared parts identical.
WORKERS = {
    "gpu-24g": "Deployment/featureedit-worker-gpu-24g",
    "cpu": "Deployment/featureedit-worker-cpu",
}
# Pod and container fields every worker Deployment shares (the GPU and the resources differ).
SHARED_POD_FIELDS = ("securityContext", "terminationGracePeriodSeconds")
SHARED_CONTAINER_FIELDS = ("envFrom", "startupProbe", "livenessProbe", "securityContext")
SHARED_VOLUMES = ("home", "registry", "cache")
_QUANTITY = re.compile(r"([0-9.]+)(m|Ki|Mi|Gi|Ti)?")
_UNITS = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (``"250m"``, ``"16Gi"``, ``2``) as a number (cores or bytes)."""
    match = _QUANTITY.fullmatch(str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


def _config() -> dict[str, str]:
    return _by_name()["ConfigMap/featureedit-config"]["data"]


def _class_models(queue_class: str) -> set[str]:
    classes = json.loads(_config()["FEATUREEDIT_QUEUE_CLASSES"])
    return {m for m, c in classes.items() if c == queue_class}


def _worker(queue_class: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(Deployment, pod spec, worker container)`` of the class's worker Deployment."""
    deployment = _by_name()[WORKERS[queue_class]]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return deployment, pod, container


def test_every_worker_deployment_is_known_and_applied() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = {}
    for path in sorted(K8S.glob("worker-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment":
                found[f"Deployment/{doc['metadata']['name']}"] = path.name
    assert set(found) == set(WORKERS.values())
    assert set(found.values()) <= set(kustomization["resources"])


@pytest.mark.parametrize("queue_class", list(WORKERS))
def test_worker_serves_its_class_and_outlives_a_job(queue_class: str) -> None:
    deployment, pod, container = _worker(queue_class)
    job_timeout = int(_config()["FEATUREEDIT_JOB_TIMEOUT"])
    assert job_timeout == Settings().job_timeout  # the default the grace period is derived from
    assert pod["terminationGracePeriodSeconds"] >= job_timeout + 60
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    args = _featureedit_parser().parse_args(container["args"])
    assert args.func.__name__ == "cmd_worker" and args.classes == queue_class
    assert not args.models and not args.queues
    assert _class_models(queue_class), f"no model of FEATUREEDIT_QUEUE_CLASSES is {queue_class}"
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for labels in (deployment["spec"]["selector"]["matchLabels"], template_labels):
        assert labels["featureedit/queue-class"] == queue_class

    for probe in ("startupProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:4] == ["python", "-m", "workers.healthcheck", "worker"], probe
    # the liveness window covers rq's idle heartbeat (every <= 405 s), with a retry to spare
    command = container["livenessProbe"]["exec"]["command"]
    max_age = float(command[command.index("--max-age") + 1])
    assert max_age > 405 and container["livenessProbe"]["failureThreshold"] >= 2

    resources = container["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert _quantity(requests["cpu"]) >= 1 and _quantity(requests["memory"]) >= 2**30
    assert _quantity(limits["memory"]) >= _quantity(requests["memory"])


def test_gpu_worker_holds_a_gpu() -> None:
    _, pod, container = _worker("gpu-24g")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]["featureedit/gpu-class"] == "gpu-24g"
    assert _featureedit_parser().parse_args(container["args"]).device == "cuda:0"


def test_cpu_worker_holds_no_gpu_and_builds_its_demo_worlds_first() -> None:
    from editing.registry import DEMO_MODELS

    _, pod, container = _worker("cpu")
    assert "nodeSelector" not in pod and "tolerations" not in pod
    everything = [*pod["initContainers"], container]
    for c in everything:
        assert not any("nvidia" in k for k in c["resources"].get("limits", {})), c["name"]
        assert not any("nvidia" in k for k in c["resources"].get("requests", {})), c["name"]
        assert ":" in c["image"] and not c["image"].endswith("-gpu"), c["name"]
    parser = _featureedit_parser()
    args = parser.parse_args(container["args"])
    # float32 whatever the ConfigMap's FEATUREEDIT_DTYPE (bfloat16, for the GPU workers) says
    assert args.device == "cpu" and args.dtype == "float32"

    # the class holds only the built-in demo worlds, and every one is built before the worker
    # starts (a job never waits minutes for a world build)
    models = _class_models("cpu")
    assert models <= set(DEMO_MODELS)
    built = set()
    for init in pod["initContainers"]:
        args = parser.parse_args(init["args"])
        assert args.func.__name__ == "cmd_world_build", init["name"]
        built.add(args.size)
        assert init["volumeMounts"] == container["volumeMounts"], init["name"]
        assert init["envFrom"] == container["envFrom"] and init["env"] == container["env"]
    assert built == {DEMO_MODELS[m] for m in models}

    # CPU-bound: a CPU limit (the capacity figures are per 2 cores) and torch's threads follow it
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert _quantity(limits["cpu"]) == _quantity(requests["cpu"]) >= 2
    env = {e["name"]: e for e in container["env"]}
    assert env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    # no models volume: the demo worlds live in the home, and so does a writable HF cache
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert "models" not in mounts and env["HF_HOME"]["value"].startswith(mounts["home"] + "/")


def test_worker_deployments_share_everything_but_the_hardware() -> None:
    (_, gpu_pod, gpu), (_, cpu_pod, cpu) = _worker("gpu-24g"), _worker("cpu")
    for field in SHARED_POD_FIELDS:
        assert gpu_pod[field] == cpu_pod[field], field
    for field in SHARED_CONTAINER_FIELDS:
        assert gpu[field] == cpu[field], field
    gpu_volumes = {v["name"]: v for v in gpu_pod["volumes"]}
    cpu_volumes = {v["name"]: v for v in cpu_pod["volumes"]}
    assert gpu_volumes["registry"] == cpu_volumes["registry"]
    gpu_mounts = {m["name"]: m for m in gpu["volumeMounts"]}
    cpu_mounts = {m["name"]: m for m in cpu["volumeMounts"]}
    for name in SHARED_VOLUMES:
        assert gpu_mounts[name] == cpu_mounts[name], name
        assert set(gpu_volumes[name]) == set(cpu_volumes[name]), name  # same kind of volume
    (gpu_strategy, cpu_strategy) = (
        _by_name()[WORKERS[c]]["spec"]["strategy"] for c in ("gpu-24g", "cpu")
    )
    assert gpu_strategy == cpu_strategy


def test_compose_cpu_workers_serve_the_k8s_cpu_class(compose: dict[str, Any]) -> None:
    """Compose's CPU workers (``--models``) and the Kubernetes ``cpu`` class hold the same models,
    and those workers also start under the Kubernetes queue classes."""
    from workers.worker import model_queue_names

    args = _featureedit_parser().parse_args(
        [_interpolate(a) for a in compose["services"]["worker"]["command"]]
    )
    models = [m for m in args.models.split(",") if m]
    assert set(models) == _class_models("cpu")
    classes = json.loads(_config()["FEATUREEDIT_QUEUE_CLASSES"])
    queues = model_queue_names(Settings(queue_classes=classes), models)
    assert queues == [Settings().class_queue_name("cpu")]


def test_kustomize_renders_the_manifests_as_written() -> None:
    binary = _subcommand("kustomize", "build", "--help") or _subcommand(
        "kubectl", "kustomize", "--help"
    )
    if binary is None:
        pytest.skip("no kustomize or kubectl here; the per-file checks above ran")
    result = subprocess.run(
        [*binary, str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = {
        f"{d['kind']}/{d['metadata']['name']}": d
        for d in yaml.safe_load_all(result.stdout)
        if d is not None
    }
    files = _by_name()
    assert set(WORKERS.values()) <= set(rendered)
    for name in WORKERS.values():  # YAML anchors expanded as the tests read them
        assert rendered[name]["spec"] == files[name]["spec"], name


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
    for kind in ("Deployment/featureedit-api", *WORKERS.values()):
        pod = docs[kind]["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
            assert refs == {"featureedit-config", "featureedit-secrets"}, kind
            for var in container.get("env", []):
                assert not SECRET_NAME.search(var["name"]), f"{kind}: secret {var['name']}"
    assert any(
        d["kind"] == "StatefulSet" and d["spec"]["volumeClaimTemplates"] for d in docs.values()
    )


# ----------------------------------------------------------------------------- Redis access
def test_compose_redis_requires_the_password_the_services_share(compose: dict[str, Any]) -> None:
    """Redis starts only with REDIS_PASSWORD (from .env, written to a config file, not argv);
    the API and workers read the same .env; the health check keeps it off redis-cli's argv."""
    services = compose["services"]
    redis = services["redis"]
    script = redis["command"][2]
    assert redis["command"][:2] == ["sh", "-c"] and "requirepass" in script
    assert (
        'test -n "$${REDIS_PASSWORD:-}"' in script and "exec redis-server /tmp/redis.conf" in script
    )
    assert [e["path"] for e in redis["env_file"]] == [".env"] and redis["env_file"][0]["required"]
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][1]
    for name in ("api", "worker", "worker-callbacks", "worker-gpu"):
        assert [e["path"] for e in services[name]["env_file"]] == [".env"], name
    assert "REDIS_PASSWORD=REPLACE_ME" in (DEPLOY / "env.example").read_text()


def test_compose_callbacks_have_their_own_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    parser = _featureedit_parser()
    callbacks = parser.parse_args(services["worker-callbacks"]["command"])
    assert callbacks.func.__name__ == "cmd_worker" and callbacks.callbacks_only
    assert services["worker-callbacks"]["environment"] == services["worker"]["environment"]
    assert services["worker-callbacks"]["volumes"] == services["worker"]["volumes"]
    for name in ("worker", "worker-gpu"):
        args = parser.parse_args([_interpolate(a) for a in services[name]["command"]])
        assert not args.callbacks_only, name


def test_k8s_redis_requires_the_secret_password_and_only_our_pods_reach_it() -> None:
    docs = _by_name()
    redis = docs["StatefulSet/featureedit-redis"]["spec"]["template"]["spec"]
    (container,) = redis["containers"]
    assert container["command"] == ["sh", "-c"] and "requirepass" in container["args"][0]
    (env,) = container["env"]
    assert env["name"] == "REDIS_PASSWORD"
    assert env["valueFrom"]["secretKeyRef"] == {
        "name": "featureedit-secrets",
        "key": "REDIS_PASSWORD",
    }
    assert "REDISCLI_AUTH" in container["readinessProbe"]["exec"]["command"][2]
    assert "REDIS_PASSWORD" in docs["Secret/featureedit-secrets"]["stringData"]

    policy = docs["NetworkPolicy/featureedit-redis"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "featureedit-redis"}
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    (peer,) = rule["from"]
    (expression,) = peer["podSelector"]["matchExpressions"]
    allowed = set(expression["values"])
    assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
    clients = {
        name: d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for name, d in docs.items()
        if d["kind"] == "Deployment"
    }
    assert set(clients.values()) == allowed, "every API/worker pod, and nothing else, reaches Redis"
    for name in clients:  # each reads the password from the same Secret
        (pod_container, *_) = docs[name]["spec"]["template"]["spec"]["containers"]
        refs = {next(iter(r.values()))["name"] for r in pod_container["envFrom"]}
        assert "featureedit-secrets" in refs, name


def test_k8s_callback_worker_holds_no_model_and_is_applied() -> None:
    deployment = _by_name()["Deployment/featureedit-callbacks"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = _featureedit_parser().parse_args(container["args"])
    assert args.func.__name__ == "cmd_worker" and args.callbacks_only
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert "models" not in mounts
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "callbacks.yaml" in kustomization["resources"]


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


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = {pattern.rstrip("*") for pattern in find["find"]["include"]}
    copied = {
        shlex.split(ln)[1].rstrip("/")
        for ln in _dockerfile()
        if ln.startswith("COPY ") and "--from=" not in ln
    }
    assert packages <= copied, f"the image lacks {sorted(packages - copied)}"


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
    public = {**env, "FEATUREEDIT_PUBLIC_URL": "https://fe.example.com"}
    api = subprocess.run(
        [str(ENTRYPOINT), "api", "--help"], env=public, capture_output=True, text=True, timeout=60
    )
    assert api.returncode == 0 and "--factory" in api.stdout, api.stderr
    # listening on 0.0.0.0 without a public URL: a clear error before uvicorn starts
    bare = {k: v for k, v in env.items() if k != "FEATUREEDIT_PUBLIC_URL"}
    refused = subprocess.run(
        [str(ENTRYPOINT), "api", "--help"], env=bare, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "FEATUREEDIT_PUBLIC_URL" in refused.stderr
