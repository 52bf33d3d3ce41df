"""Static checks of docker-compose.yml and deploy/k8s: every service command exists, every LINEWATCH_*
variable set is one the settings read, and ports, partitions and topic names agree with the code."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from linewatch.core.services import PIPELINE, SERVICES
from linewatch.core.settings import REPO_ROOT, CommonSettings, Topics
from linewatch.services.alerter.settings import AlerterSettings
from linewatch.services.simulator.commands import add_arguments as simulator_arguments
from linewatch.services.validator.settings import ValidatorSettings
from linewatch.services.writer.settings import WriterSettings

pytestmark = pytest.mark.production
SETTINGS: dict[str, type[CommonSettings]] = {s.name: s.settings_class() for s in SERVICES}
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"


def reads(settings: type[BaseModel], variable: str) -> bool:
    """Whether LINEWATCH_A__B names a field (nested with __) of these settings."""
    if not variable.startswith("LINEWATCH_"):
        return False
    model: Any = settings
    for part in variable.removeprefix("LINEWATCH_").lower().split("__"):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def test_the_variable_check_can_fail() -> None:
    assert reads(WriterSettings, "LINEWATCH_INFLUX__TOKEN") and reads(AlerterSettings, "LINEWATCH_NOTIFY__SMTP_HOST")
    assert not reads(WriterSettings, "LINEWATCH_INFLUX__TOKN") and not reads(ValidatorSettings, "LINEWATCH_INFLUX__URL")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return loaded


def linewatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "linewatch:local"}


def test_compose_commands_exist_and_name_the_service(compose: dict[str, Any]) -> None:
    services = linewatch_services(compose)
    assert set(PIPELINE) <= set(services) <= set(SETTINGS)
    for name, service in services.items():
        command = service["command"]
        if command[0] == "service":
            assert command[1] == name  # one name everywhere
        else:
            assert command[0] == "simulate" and name == "simulator"
            parser = argparse.ArgumentParser()
            simulator_arguments(parser)
            parser.parse_args(command[1:])  # raises SystemExit on an unknown flag


def test_compose_variables_are_read_by_the_settings(compose: dict[str, Any]) -> None:
    for name, service in linewatch_services(compose).items():
        settings = SETTINGS[name]
        for variable in service["environment"]:
            assert reads(settings, variable) or any(reads(s, variable) for s in SETTINGS.values()), (name, variable)
            if variable not in compose["x-linewatch"]["environment"]:
                assert reads(settings, variable), f"{name} does not read {variable}"


def test_compose_secrets_are_required_and_documented(compose: dict[str, Any]) -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"INFLUX_ADMIN_TOKEN", "INFLUX_WRITER_PASSWORD", "INFLUX_GRAFANA_PASSWORD", "MODEL_SIGNING_KEY"} <= required
    assert {"ALARM_API_TOKENS", "GRAFANA_ADMIN_PASSWORD"} <= required
    example = {line.split("=")[0] for line in (REPO_ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert required | set(re.findall(r"\$\{(\w+):-", text)) <= example


def secrets_of(service: dict[str, Any]) -> set[str]:
    """The .env secrets a compose service is handed."""
    return {name for value in service.get("environment", {}).values() for name in re.findall(r"\$\{(\w+)", str(value))}


def test_compose_each_container_gets_only_the_secrets_it_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert not secrets_of(compose["x-linewatch"]), "no secret for every service"
    given = {
        name: secrets_of(services[name]) - {"NOTIFY_SMTP_PORT", "NOTIFY_SMTP_FROM", "NOTIFY_SMTP_HOST"}
        for name in services
    }
    assert given["validator"] == set() and given["simulator"] == set()
    assert given["scorer"] == {"MODEL_SIGNING_KEY"}
    assert given["writer"] == {"INFLUX_WRITER_PASSWORD"}
    assert given["gateway"] == {"OPCUA_ENDPOINT", "OPCUA_USERNAME", "OPCUA_PASSWORD", "MQTT_HOST", "MQTT_PORT"} | {
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
    }
    assert given["alerter"] == {
        "ALARM_API_TOKENS",
        "NOTIFY_WEBHOOK_URL",
        "NOTIFY_SMTP_USERNAME",
        "NOTIFY_SMTP_PASSWORD",
        "GRAFANA_API_TOKEN",
        "INFLUX_ALERTER_PASSWORD",
    }
    assert given["grafana"] == {"GRAFANA_ADMIN_PASSWORD", "INFLUX_GRAFANA_PASSWORD"}
    assert [name for name in services if "INFLUX_ADMIN_TOKEN" in given[name]] == ["influxdb"]
    # The writer may only write and Grafana only read: the users made on first start, and who uses them.
    init = (REPO_ROOT / "deploy" / "influxdb" / "init-dbrp.sh").read_text()
    assert (
        re.search(r"--username linewatch-writer .*--write-bucket", init)
        and "--read-bucket" not in init.split("linewatch-writer")[1].split("\n")[0]
    )
    assert re.search(r"--username grafana .*--read-bucket", init)
    assert services["writer"]["environment"]["LINEWATCH_INFLUX__USERNAME"] == "linewatch-writer"
    assert services["alerter"]["environment"]["LINEWATCH_INFLUX__USERNAME"] == "linewatch-alerter"
    assert re.search(r"--username linewatch-alerter .*--read-bucket", init)
    source = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/datasources/influxdb.yaml").read_text())
    assert source["datasources"][0]["user"] == "grafana"


def test_compose_ports_partitions_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    shared = compose["x-linewatch"]["environment"]
    assert shared["LINEWATCH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    writer = services["writer"]["environment"]
    assert writer["LINEWATCH_INFLUX__URL"].endswith(":8086") and "8086:8086" in services["influxdb"]["ports"]
    assert str(services["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) == shared["LINEWATCH_KAFKA__PARTITIONS"]
    alerter = services["alerter"]
    assert f"{alerter['environment']['LINEWATCH_API_PORT']}:8300" in alerter["ports"]
    for name in ("kafka", "influxdb", "grafana"):
        assert "healthcheck" in services[name], name
    # Every linewatch service: readiness on its health port (the anchor's, unless it has its own).
    for name, service in linewatch_services(compose).items():
        port = service.get("environment", shared)["LINEWATCH_HEALTH__PORT"]
        probe = " ".join((service.get("healthcheck") or compose["x-linewatch"]["healthcheck"])["test"])
        assert f"localhost:{port}/readyz" in probe, name
    for name, service in linewatch_services(compose).items():
        depends = service.get("depends_on") or compose["x-linewatch"]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
    mounts = " ".join(services["grafana"]["volumes"])
    assert "deploy/grafana/provisioning" in mounts and "deploy/grafana/dashboards" in mounts


def test_a_stop_ends_on_its_own_before_the_engine_kills_it(compose: dict[str, Any]) -> None:
    """A service exits by LINEWATCH_STOP_WITHIN_S even with the broker gone; the engine's SIGKILL comes later."""
    shared = compose["x-linewatch"]["environment"]
    for name, service in linewatch_services(compose).items():
        environment = service.get("environment", shared)
        stop_within_s = float(environment.get("LINEWATCH_STOP_WITHIN_S", CommonSettings().stop_within_s))
        grace = str(service.get("stop_grace_period", "10s"))  # docker's default
        assert grace.endswith("s") and stop_within_s < float(grace[:-1]), name
    documents = k8s_documents()
    [config] = [d for d in documents if d["kind"] == "ConfigMap"]
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        env = config["data"] | {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        stop_within_s = float(env.get("LINEWATCH_STOP_WITHIN_S") or CommonSettings().stop_within_s)
        assert stop_within_s < pod.get("terminationGracePeriodSeconds", 30), deployment["metadata"]["name"]


def k8s_documents(folder: Path = K8S) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(folder.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def all_k8s_documents() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy` applies: linewatch and Kafka (k8s/), InfluxDB and Grafana (k8s/platform/)."""
    return k8s_documents() + k8s_documents(K8S / "platform")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    generated = {g["name"]: g["envs"] for g in kustomization["secretGenerator"]}
    with_secrets = ("scorer", "alerter", "writer", "gateway")
    assert generated == {f"{name}-secrets": [f"secrets/{name}.env"] for name in with_secrets}
    for name in with_secrets:
        assert (K8S / "secrets" / f"{name}.env.example").is_file(), name


def k8s_secrets(name: str) -> list[str]:
    example = K8S / "secrets" / f"{name}.env.example"
    lines = example.read_text().splitlines() if example.is_file() else []
    return [line.split("=")[0] for line in lines if "=" in line and not line.startswith("#")]


def test_k8s_deployments_run_real_services_with_variables_they_read() -> None:
    documents = k8s_documents()
    [config] = [d for d in documents if d["kind"] == "ConfigMap"]
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert set(deployments) == set(PIPELINE)
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["service", name] and container["name"] == name
        assert {"configMapRef": {"name": "linewatch-config"}} in container["envFrom"]
        # Least privilege: its own Secret or none, and every key in it one that it reads.
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert refs == ([f"{name}-secrets"] if k8s_secrets(name) else []), name
        for variable in k8s_secrets(name):
            assert reads(SETTINGS[name], variable), f"{name} does not read its secret {variable}"
        # Probes on the health port the settings serve, and a state volume for the broker-loss report.
        health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
        assert health == int(config["data"]["LINEWATCH_HEALTH__PORT"])
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert config["data"]["LINEWATCH_HEALTH__STATE_DIR"] in mounts
        for variable in [e["name"] for e in container.get("env", [])]:
            assert reads(SETTINGS[name], variable), f"{name} does not read {variable}"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if name == "alerter":
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert ports["api"] == int(env["LINEWATCH_API_PORT"])
    assert not any("TOKEN" in v or "PASSWORD" in v or "KEY" in v for v in config["data"]), "no secret in the ConfigMap"
    for variable in config["data"]:
        assert all(reads(s, variable) for s in SETTINGS.values()), f"not every service reads {variable}"
    [service] = [d for d in documents if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "api"


def test_k8s_gateway_keeps_its_buffer_on_its_own_volume() -> None:
    [gateway] = [d for d in k8s_documents() if d["kind"] == "StatefulSet"]
    assert gateway["metadata"]["name"] == "gateway" and gateway["spec"]["replicas"] == 1
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["service", "gateway"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for variable in [*env, *k8s_secrets("gateway")]:
        assert reads(SETTINGS["gateway"], variable), f"gateway does not read {variable}"
    [claim] = gateway["spec"]["volumeClaimTemplates"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}[claim["metadata"]["name"]]
    assert env["LINEWATCH_BUFFER__PATH"].startswith(mount + "/") and claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_k8s_each_service_signs_in_to_kafka_as_itself_with_only_what_it_does() -> None:
    documents = k8s_documents()
    [config] = [d for d in documents if d["kind"] == "ConfigMap"]
    assert config["data"]["LINEWATCH_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    [kafka] = [d for d in documents if d["kind"] == "Kafka"]
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert all(listener["tls"] and listener["authentication"]["type"] == "scram-sha-512" for listener in listeners)
    assert config["data"]["LINEWATCH_KAFKA__BOOTSTRAP_SERVERS"].endswith(f":{listeners[0]['port']}")
    users = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "KafkaUser"}
    workloads = [d for d in documents if d["kind"] in ("Deployment", "StatefulSet")]
    assert set(users) == {w["metadata"]["name"] for w in workloads}
    topic = Topics().model_dump()
    for workload in workloads:
        name = workload["metadata"]["name"]
        [container] = workload["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["LINEWATCH_KAFKA__SASL_USERNAME"]["value"] == name
        # Its own user's password and no other's.
        assert env["LINEWATCH_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "password"}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert config["data"]["LINEWATCH_KAFKA__SSL_CAFILE"].rsplit("/", 1)[0] in mounts
        service = next(s for s in SERVICES if s.name == name)
        acls = users[name]["authorization"]["acls"]
        on_topics = {a["resource"]["name"]: set(a["operations"]) for a in acls if a["resource"]["type"] == "topic"}
        readable = {t for t, ops in on_topics.items() if "Read" in ops}
        writable = {t for t, ops in on_topics.items() if "Write" in ops}
        assert writable == {topic[t] for t in service.outputs}, name
        # Its inputs; the alerter also reads back its own alarms (the API's view of every partition).
        read_back = {topic["alarms"]} if name == "alerter" else set()
        assert readable == {topic[t] for t in service.inputs} | read_back, name
        groups = {a["resource"]["name"] for a in acls if a["resource"]["type"] == "group"}
        assert groups == ({name} if service.inputs else set())
        prefixed = {t for t in on_topics if t not in topic.values()}
        assert prefixed <= {f"{name}-"}, "only its own faust internal topics beyond the contract's"


def test_kafka_settings_refuse_sasl_without_a_user() -> None:
    from linewatch.core.settings import KafkaSettings

    with pytest.raises(ValueError, match="LINEWATCH_KAFKA__SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match="SSL_KEYFILE"):
        KafkaSettings(security_protocol="SSL", ssl_certfile=Path("client.crt"))


def test_k8s_topics_and_partitions_agree_with_the_code() -> None:
    documents = k8s_documents()
    topics = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "KafkaTopic"}
    assert set(topics) == set(Topics().all())
    [config] = [d for d in documents if d["kind"] == "ConfigMap"]
    partitions = int(config["data"]["LINEWATCH_KAFKA__PARTITIONS"])
    assert {spec["partitions"] for spec in topics.values()} == {partitions}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        assert deployment["spec"]["replicas"] <= partitions  # more workers than partitions would idle


def test_empty_or_placeholder_credentials_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    for tokens in ('{"alice": ""}', '{"alice": "changeme"}', '{"alice": "<openssl rand -hex 32>"}'):
        monkeypatch.setenv("LINEWATCH_API_TOKENS", tokens)
        with pytest.raises(ValidationError, match="api_tokens"):
            AlerterSettings()
    monkeypatch.setenv("LINEWATCH_API_TOKENS", '{"alice": "9f2c1e7a0b"}')
    monkeypatch.setenv("LINEWATCH_NOTIFY__SMTP_PASSWORD", "")  # compose's way of saying "no mail server"
    settings = AlerterSettings()
    assert (
        settings.notify.smtp_password is None and settings.api_tokens["alice"].token.get_secret_value() == "9f2c1e7a0b"
    )
    monkeypatch.setenv("LINEWATCH_INFLUX__PASSWORD", "")
    with pytest.raises(ValidationError, match="is empty"):
        WriterSettings()


def test_images_run_as_a_numeric_non_root_user_and_build_from_sources_only() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user.isdigit() and int(user) > 0, "the kubelet checks runAsNonRoot only for a numeric user"
    workloads = [d for d in all_k8s_documents() if d["kind"] in ("Deployment", "StatefulSet")]
    assert {w["metadata"]["name"] for w in workloads} == {*PIPELINE, "gateway", "influxdb", "grafana"}
    for workload in workloads:
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, name
        if pod["containers"][0]["image"] == "linewatch":
            assert context["runAsUser"] == int(user), name
        for container in pod["containers"]:
            assert container["livenessProbe"]["httpGet"] and container["readinessProbe"]["httpGet"], name
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv/", ".git/", ".env", "models/"} <= set(ignored)


def test_k8s_data_lives_on_volumes_and_the_first_model_is_learned() -> None:
    documents = all_k8s_documents()
    claims = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    data_paths = {"scorer": "/models", "influxdb": "/var/lib/influxdb2", "grafana": "/var/lib/grafana"}
    for workload in (d for d in documents if d["kind"] in ("Deployment", "StatefulSet")):
        if workload["metadata"]["name"] not in data_paths:
            continue
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        claimed = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        claimed |= {
            t["metadata"]["name"]: t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        claims |= {t["metadata"]["name"]: t["spec"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        volume = mounts[data_paths[name]]
        assert volume["name"] in claimed and not volume.get("readOnly"), name
        # ReadWriteOnce: what every storage class offers.
        assert claims[claimed[volume["name"]]]["accessModes"] == ["ReadWriteOnce"], name
    [scorer] = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "scorer"]
    env = {e["name"]: e.get("value") for e in scorer["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert float(env["LINEWATCH_LEARN_H"]) > 0 and env["LINEWATCH_REGISTRY"] == "/models"
    # One ReadWriteOnce volume for all replicas: they must share its node.
    [term] = scorer["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == scorer["spec"]["selector"]["matchLabels"]


def test_k8s_platform_provides_influxdb_and_grafana_from_the_files_compose_uses() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "k8s"
    assert {DEPLOY / r for r in kustomization["resources"][1:]} == set((K8S / "platform").glob("*.yaml"))
    generated = {g["name"]: [DEPLOY / f for f in g["files"]] for g in kustomization["configMapGenerator"]}
    assert all(path.is_file() for paths in generated.values() for path in paths)
    assert set(generated["grafana-dashboards"]) == set((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    secrets = {g["name"]: DEPLOY / g["envs"][0] for g in kustomization["secretGenerator"]}
    platform = k8s_documents(K8S / "platform")
    services = {d["metadata"]["name"]: d["spec"]["ports"][0]["port"] for d in platform if d["kind"] == "Service"}
    # The linewatch services find them by the names their settings use.
    for document in k8s_documents():
        for url in re.findall(r"http://(\w+)\.linewatch\.svc:(\d+)", yaml.safe_dump(document)):
            assert services[url[0]] == int(url[1]), url
    init_script = (DEPLOY / "influxdb" / "init-dbrp.sh").read_text()
    for workload in (d for d in platform if d["kind"] == "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert [e["secretRef"]["name"] for e in container["envFrom"]] == [f"{workload['metadata']['name']}-secrets"]
        maps = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
        assert maps and set(maps) <= set(generated)
    example = (secrets["influxdb-secrets"].parent / "influxdb.env.example").read_text()
    for variable in set(re.findall(r"\$(INFLUX_\w+_PASSWORD)", init_script)):
        assert f"\n{variable}=" in example, variable
    # The v1 users the writer and alerter sign in as are the ones the init script makes.
    for name in ("writer", "alerter"):
        [workload] = [d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
        env = {e["name"]: e.get("value") for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert f"--username {env['LINEWATCH_INFLUX__USERNAME']} " in init_script, name
        assert "LINEWATCH_INFLUX__PASSWORD" in k8s_secrets(name), name
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv/", ".git/", ".env", "models/"} <= set(ignored)


def test_kafka_keeps_its_data_on_its_volume_and_lets_host_tools_in(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    mounted = {volume.split(":")[1] for volume in kafka["volumes"]}
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in mounted
    external = re.search(r"EXTERNAL://localhost:(\d+)", kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert external and any(port.endswith(f"{external[1]}:{external[1]}") for port in kafka["ports"])


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    """The Compose Specification's own JSON schema (tests/data/compose-spec.json, vendored from compose-spec
    through check-jsonschema; Apache-2.0), checked with jsonschema."""
    import json

    from jsonschema import Draft202012Validator

    schema = json.loads((REPO_ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = Draft202012Validator(schema)
    assert [e.message for e in validator.iter_errors(compose)] == []
    rendered = render_compose((REPO_ROOT / "docker-compose.yml").read_text(), first_users_env())
    assert [e.message for e in validator.iter_errors(rendered)] == []
    broken = compose | {"services": {"writer": {"image": "linewatch:local", "comand": ["service", "writer"]}}}
    assert any("comand" in e.message for e in validator.iter_errors(broken))  # the check can fail


class Unset(Exception):
    """A `${VAR:?message}` with VAR unset or empty: `docker compose` refuses to start and prints the message."""


_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def render_compose(text: str, env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` gives it (the Compose Specification's interpolation: $$,
    $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; YAML merge keys)."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1] or match[4], match[2], match[3]
        given = env.get(name)
        missing = given is None or (operator in (":-", ":?") and given == "")
        if operator in (":?", "?") and missing:
            raise Unset(f"{name}: {argument}")
        return argument if operator in (":-", "-") and missing else (given or "")

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _VARIABLE.sub(value, node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        return node

    return dict(walk(yaml.safe_load(text)))


def first_users_env() -> dict[str, str]:
    """.env.example with what `:?` requires filled in, as a first user is told to (the optional ones left empty)."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", text))
    return (
        env
        | {name: f"{name.lower()}-5f0c9a7e21d4" for name in required}
        | {"ALARM_API_TOKENS": '{"bob": "4b1e9d0c7a"}'}
    )


def build_settings(monkeypatch: pytest.MonkeyPatch, name: str, environment: dict[str, Any]) -> None:
    """`name`'s settings from exactly `environment`, as its container or pod gets it (none of this process's
    LINEWATCH_* variables): raises ValidationError on what they refuse, as the service would at start."""
    with monkeypatch.context() as container:
        for variable in [v for v in os.environ if v.startswith("LINEWATCH_")]:
            container.delenv(variable)
        for variable, value in environment.items():
            container.setenv(variable, str(value))
        SETTINGS[name]()


def test_compose_renders_with_a_first_users_env_and_each_service_accepts_what_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment each linewatch container gets on a first `docker compose up` is one its settings accept."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    with pytest.raises(Unset, match=r"INFLUX_ADMIN_PASSWORD: set INFLUX_ADMIN_PASSWORD in \.env"):
        render_compose(text, {})
    rendered = render_compose(text, first_users_env())
    for name, service in linewatch_services(rendered).items():
        build_settings(monkeypatch, name, service["environment"])
    assert rendered["services"]["alerter"]["environment"]["LINEWATCH_NOTIFY__SMTP_PORT"] == "25"
    assert rendered["services"]["alerter"]["environment"]["LINEWATCH_NOTIFY__SMTP_HOST"] == ""
    # And the check can fail: a port that is not a number is refused.
    broken = render_compose(text, first_users_env() | {"MQTT_PORT": "none"})
    with pytest.raises(ValueError, match="port"):
        build_settings(monkeypatch, "gateway", broken["services"]["gateway"]["environment"])


# Strimzi's resources are checked by its operator's CRD schemas in the cluster; kubernetes-validate ships the core.
CUSTOM_KINDS = {"Kafka", "KafkaTopic", "KafkaNodePool", "KafkaUser"}
K8S_VERSION = "1.31.0"


def test_k8s_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    """Every core resource against the Kubernetes API's OpenAPI schemas, strict (unknown fields refused), with
    kubernetes-validate."""
    import kubernetes_validate

    checked = 0
    for document in all_k8s_documents():
        if document["kind"] in CUSTOM_KINDS or document["kind"] == "Kustomization":
            continue
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 13
    [deployment] = [d for d in k8s_documents() if d["kind"] == "Deployment"][:1]
    deployment = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def unresolved(documents: list[dict[str, Any]]) -> list[str]:
    """What in a rendered build names an object the build does not make: a pod with such a reference never starts
    (CreateContainerConfigError, a volume that never mounts), a probe on a port name it lacks always fails, a
    Service whose selector matches no pod has no endpoints. None of it is a schema error. The Secrets Strimzi makes
    (one a KafkaUser, the cluster CA's) count as made."""
    made = {(d["kind"], d["metadata"]["name"]) for d in documents}
    made |= {("Secret", d["metadata"]["name"]) for d in documents if d["kind"] == "KafkaUser"}
    made |= {("Secret", f"{d['metadata']['name']}-cluster-ca-cert") for d in documents if d["kind"] == "Kafka"}
    workloads = [d for d in documents if d["kind"] in ("Deployment", "StatefulSet")]
    problems = [
        f"{d['kind']} {d['metadata']['name']} is in namespace {d['metadata'].get('namespace')}"
        for d in documents
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "linewatch"
    ]
    for workload in workloads:
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if not selects(workload["spec"]["selector"]["matchLabels"], labels):
            problems.append(f"{name}: its selector does not select its own pods")
        named: list[tuple[str, str]] = []
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                named.append(("ConfigMap", volume["configMap"]["name"]))
            if "secret" in volume:
                named.append(("Secret", volume["secret"]["secretName"]))
            if "persistentVolumeClaim" in volume:
                named.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in pod["containers"] + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                named += [(kind, source[ref]["name"]) for ref, kind in REFS if ref in source]
            for variable in container.get("env", []):
                named += [
                    (kind, variable["valueFrom"][ref]["name"])
                    for ref, kind in KEY_REFS
                    if ref in variable.get("valueFrom", {})
                ]
            problems += [
                f"{name}: mounts {m['name']}, not a volume"
                for m in container.get("volumeMounts", [])
                if m["name"] not in volumes
            ]
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{name}: its {probe} is on port {port}, which it does not name")
        problems += [
            f"{name}: names {kind} {ref}, which nothing makes" for kind, ref in named if (kind, ref) not in made
        ]
    for service in (d for d in documents if d["kind"] == "Service"):
        selected = [
            w for w in workloads if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        ports = {
            p.get("name")
            for w in selected
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        if not selected:
            problems.append(f"Service {service['metadata']['name']} selects no pod")
            continue
        problems += [
            f"Service {service['metadata']['name']} sends to port {p['targetPort']}, which its pods do not name"
            for p in service["spec"]["ports"]
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports
        ]
    return problems


REFS = (("secretRef", "Secret"), ("configMapRef", "ConfigMap"))
KEY_REFS = (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap"))


# What a first user fills in of the secrets' examples: what the services refuse empty (the optional ones stay so).
FIRST_SECRETS = {
    "LINEWATCH_API_TOKENS=": 'LINEWATCH_API_TOKENS={"bob": "4b1e9d0c7a"}',
    "LINEWATCH_MODEL_SIGNING_KEY=": "LINEWATCH_MODEL_SIGNING_KEY=0d9e4f1a7c3b5e2d",
    "LINEWATCH_INFLUX__PASSWORD=": "LINEWATCH_INFLUX__PASSWORD=7a1c0e9f3b",
}


@pytest.fixture(scope="module")
def kustomize_build(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy` (kustomize itself, as `kubectl apply -k deploy` runs it) on a copy of deploy/
    whose secrets are the examples, as a first user's would be."""
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize build is not rendered")
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy)
    for example in copy.glob("k8s/secrets/*.env.example"):
        lines = example.read_text().splitlines()
        example.with_suffix("").write_text("\n".join(FIRST_SECRETS.get(line, line) for line in lines))
    built = subprocess.run([kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def test_the_kustomize_build_renders_and_every_name_in_it_resolves(kustomize_build: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    rendered = {(d["kind"], d["metadata"]["name"]) for d in kustomize_build}
    written = {(d["kind"], d["metadata"]["name"]) for d in all_k8s_documents() if d["kind"] != "Kustomization"}
    assert written <= rendered
    secrets = {name for kind, name in rendered if kind == "Secret"}
    assert {f"{name}-secrets" for name in ("scorer", "alerter", "writer", "gateway")} <= secrets
    assert unresolved(kustomize_build) == []
    for document in kustomize_build:
        if document["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    images = {
        c["image"]
        for d in kustomize_build
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"ghcr.io/linewatch/linewatch:0.1.0"}


def test_each_service_accepts_the_environment_its_pod_gets(
    kustomize_build: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ConfigMap, its own Secret (as a first user fills it in) and its Kafka password (Strimzi's): what a
    pod's settings refuse, it refuses at start, over and over (CrashLoopBackOff)."""
    import base64

    maps = {d["metadata"]["name"]: d.get("data", {}) for d in kustomize_build if d["kind"] == "ConfigMap"}
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
        for d in kustomize_build
        if d["kind"] == "Secret"
    }
    workloads = [d for d in kustomize_build if d["kind"] in ("Deployment", "StatefulSet")]
    checked = []
    for workload in workloads:
        [container] = workload["spec"]["template"]["spec"]["containers"]
        if not container["image"].startswith("ghcr.io/linewatch/"):
            continue
        environment: dict[str, Any] = {}
        for source in container["envFrom"]:
            given = maps[source["configMapRef"]["name"]] if "configMapRef" in source else None
            environment |= given or secrets[source["secretRef"]["name"]]
        for variable in container.get("env", []):
            environment[variable["name"]] = variable.get("value", "a-password-strimzi-made")
        build_settings(monkeypatch, workload["metadata"]["name"], environment)
        checked.append(workload["metadata"]["name"])
    assert sorted(checked) == sorted([*PIPELINE, "gateway"])


def test_the_reference_check_finds_what_a_pod_would_wait_for(kustomize_build: list[dict[str, Any]]) -> None:
    import copy

    broken = copy.deepcopy(kustomize_build)
    [writer] = [d for d in broken if d["kind"] == "Deployment" and d["metadata"]["name"] == "writer"]
    container = writer["spec"]["template"]["spec"]["containers"][0]
    container["envFrom"].append({"secretRef": {"name": "writer-secret"}})
    container["readinessProbe"]["httpGet"]["port"] = "helth"
    [grafana] = [d for d in broken if d["kind"] == "Service" and d["metadata"]["name"] == "grafana"]
    grafana["spec"]["selector"] = {"app.kubernetes.io/name": "grafana-oss"}
    assert unresolved(broken) == [
        "writer: its readinessProbe is on port helth, which it does not name",
        "writer: names Secret writer-secret, which nothing makes",
        "Service grafana selects no pod",
    ]


def pinned(lock: Path) -> dict[str, tuple[str, set[str]]]:
    """Package -> (version, hashes) of a `uv pip compile --generate-hashes` lock."""
    entries = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:    --hash=sha256:\w+(?: \\)?\n)+)", lock.read_text(), re.M
    )
    return {name.lower(): (version, set(re.findall(r"sha256:(\w+)", hashes))) for name, version, hashes in entries}


def test_the_image_installs_the_versions_the_tests_ran() -> None:
    """The Dockerfile installs requirements.lock, CI requirements-dev.lock: each runtime package at the version and
    with files the development lock has."""
    runtime, development = pinned(REPO_ROOT / "requirements.lock"), pinned(REPO_ROOT / "requirements-dev.lock")
    assert {"faust-streaming", "scikit-learn", "influxdb-client", "aiokafka", "kafka-python"} <= set(runtime)
    for name, (version, hashes) in runtime.items():
        assert development[name][0] == version, f"{name} {version} in the image, {development[name][0]} in the tests"
        assert hashes <= development[name][1], name


def test_every_module_imports_with_only_what_the_image_installs() -> None:
    """In a fresh interpreter where the modules of every package the image lacks (the development lock's
    test, lint and dev-broker packages) cannot be imported: no service or command needs one to start."""
    import subprocess
    import sys

    runtime = set(pinned(REPO_ROOT / "requirements.lock")) | {"linewatch", "pip", "setuptools"}
    script = f"""
import importlib, importlib.abc, pkgutil, re, sys
from importlib.metadata import packages_distributions
runtime = {sorted(runtime)!r}
lacked = {{m for m, d in packages_distributions().items()
           if not any(re.sub(r"[-_.]+", "-", n).lower() in runtime for n in d)}}
class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in lacked:
            raise ModuleNotFoundError(f"{{name}} is not in requirements.lock")
sys.meta_path.insert(0, NotInTheImage())
import linewatch
failed = []
for module in pkgutil.walk_packages(linewatch.__path__, "linewatch."):
    try:
        importlib.import_module(module.name)
    except ImportError as exc:
        failed.append(f"{{module.name}}: {{exc}}")
print("\\n".join(failed) or f"imported {{len(sys.modules)}} modules")
"""
    checked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("imported"), checked.stdout
    # The check can fail: a development package is refused.
    refused = subprocess.run(
        [sys.executable, "-c", script.replace("import linewatch\n", "import linewatch, pytest\n")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "pytest is not in requirements.lock" in refused.stderr
