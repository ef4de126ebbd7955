"""deploy/: systemd units verified by systemd, Kubernetes and compose files checked for what each
kind needs, and the example Mosquitto ACL enforced by a real TLS Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from collector.transport import MqttSettings, TlsSettings
from service_fixtures import free_port, make_certs

pytestmark = pytest.mark.timeout(60)
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
UNIT_NAMES = {"strandwatch.service", "strandwatch-agent.service", "strandwatch-collect.service",
              "strandwatch-ingest.service", "strandwatch-detect.service"}


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_every_service_has_a_unit():
    assert {unit.name for unit in UNITS} == UNIT_NAMES


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened(unit):
    service = unit_settings(unit)["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "exec" and one["User"] == "strandwatch"
    assert one["NoNewPrivileges"] == "yes" and one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["ReadWritePaths"] == "/var/lib/strandwatch"
    assert one["RestartSec"] and one["Restart"] == "on-failure"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID" and one["KillSignal"] == "SIGTERM"
    assert one["ProtectHome"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["ExecStart"].startswith("/opt/strandwatch/.venv/bin/strandwatch ")
    if unit.name != "strandwatch-agent.service":
        assert one["PrivateDevices"] == "yes"
    else:  # NVML needs the NVIDIA device nodes, and nothing else
        assert one["DevicePolicy"] == "closed"
        assert "/dev/nvidiactl rw" in service["DeviceAllow"]


@pytest.fixture(scope="module")
def verifiable_units(tmp_path_factory):
    """The units with ExecStart pointing at an executable that exists here (verify checks it)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed (apt-get install systemd)")
    directory = tmp_path_factory.mktemp("units")
    for unit in UNITS:
        text = unit.read_text().replace("/opt/strandwatch/.venv/bin/strandwatch", "/bin/true")
        (directory / unit.name).write_text(text)
    return sorted(directory.glob("*.service"))


def test_systemd_analyze_verify_accepts_the_units(verifiable_units):
    result = subprocess.run(["systemd-analyze", "verify", *map(str, verifiable_units)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # unknown keys and bad values are only warnings


def test_systemd_rates_the_units_exposure_low(verifiable_units):
    for unit in verifiable_units:
        result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                                capture_output=True, text=True, timeout=30)
        score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
        assert score, result.stdout + result.stderr
        assert float(score.group(1)) <= 2.0, f"{unit.name}: {score.group(0)}"


# --- Kubernetes --------------------------------------------------------------------------------

def kubernetes_documents() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        path = DEPLOY / "kubernetes" / resource
        assert path.exists(), f"kustomization names {resource}, which does not exist"
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def test_kubernetes_manifests_have_what_each_kind_needs():
    documents = kubernetes_documents()
    kinds = [doc["kind"] for doc in documents]
    assert kinds.count("DaemonSet") == 1 and kinds.count("Deployment") == 3
    config_maps = {doc["metadata"]["name"] for doc in documents if doc["kind"] == "ConfigMap"}
    example_secrets = {doc["metadata"]["name"]: doc for doc in
                       yaml.safe_load_all((DEPLOY / "kubernetes" / "secrets.example.yaml").read_text())}
    for doc in documents:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        assert {"apiVersion", "kind", "metadata"} <= set(doc), where
        assert doc["metadata"].get("name"), where
        if doc["kind"] == "ConfigMap":
            assert doc["data"], where
        if doc["kind"] not in ("DaemonSet", "Deployment"):
            continue
        assert doc["apiVersion"] == "apps/v1", where
        spec = doc["spec"]
        selector = spec["selector"]["matchLabels"]
        template = spec["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), f"{where}: selector misses the pods"
        pod = template["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in pod["containers"]:
            assert container["image"].startswith("strandwatch:"), where
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
            assert context.get("privileged") is not True and context["readOnlyRootFilesystem"] is True
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, f"{where}: mount {mount['name']} has no volume"
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    secret = example_secrets[reference["name"]]
                    assert reference["key"] in secret["stringData"], f"{where}: {reference}"
        assert pod["securityContext"]["runAsNonRoot"] is True
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{where}: {volume}"
            if "secret" in volume:
                assert volume["secret"]["secretName"] in example_secrets, f"{where}: {volume}"


def test_the_agent_daemonset_sees_the_host():
    agent = next(doc for doc in kubernetes_documents() if doc["kind"] == "DaemonSet")
    pod = agent["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["runtimeClassName"] == "nvidia"
    host_paths = {volume["hostPath"]["path"] for volume in pod["volumes"] if "hostPath" in volume}
    assert {"/sys", "/run/nvidia/driver"} <= host_paths
    container = pod["containers"][0]
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/host/sys"]["readOnly"] is True
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "nvidia.com/gpu" not in str(container["resources"])  # watches GPUs without claiming one
    config = yaml.safe_load(next(doc for doc in kubernetes_documents()
                                 if doc["metadata"]["name"] == "strandwatch-agent"
                                 and doc["kind"] == "ConfigMap")["data"]["agent.yaml"])
    assert config["agent"]["sources"]["rdma"]["sysfs_root"] == "/host/sys"
    assert config["mqtt"]["spool"]["path"].startswith("/var/lib/strandwatch/")


# --- compose -------------------------------------------------------------------------------------

def test_compose_file_wires_the_stack():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"mosquitto", "influxdb", "grafana", "collect", "ingest", "detect", "strandwatch"} <= set(services)
    declared = set(compose["volumes"])
    for name, service in services.items():
        assert service.get("image"), name
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                continue
            assert source in declared, f"{name}: named volume {source} is not declared"
    grafana = {volume.split(":")[1]: volume.split(":")[0] for volume in services["grafana"]["volumes"]}
    for kind in ("datasources", "dashboards", "alerting"):
        source = grafana[f"/etc/grafana/provisioning/{kind}"]
        assert source == f"../dashboards/{kind}" and (DEPLOY / source).is_dir()
    provider = yaml.safe_load((DEPLOY / "../dashboards/dashboards/provider.yaml").read_text())
    provider_path = provider["providers"][0]["options"]["path"]
    assert provider_path.startswith("/etc/grafana/provisioning/dashboards/")
    assert (DEPLOY / "../dashboards/dashboards" / Path(provider_path).name).is_dir()
    mosquitto = {volume.split(":")[1]: volume.split(":")[0] for volume in services["mosquitto"]["volumes"]}
    for shipped in ("mosquitto.conf", "acl"):
        assert (DEPLOY / mosquitto[f"/mosquitto/config/{shipped}"]).is_file()
    for name in ("collect", "ingest", "detect"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert parse_command(service["command"]).command == name
        assert "/etc/strandwatch/strandwatch.yaml" in service["command"]


def parse_command(argv: list[str]):
    """``argv`` parsed by strandwatch's own parser: the command line exists, options and all."""
    from detector.cli import build_parser

    return build_parser().parse_args(argv)


def deploy_command_lines() -> dict[str, list[str]]:
    """Every strandwatch command line the deploy files start, by where it is."""
    lines = {}
    for unit in UNITS:
        exec_start = unit_settings(unit)["Service"]["ExecStart"][-1].split()
        lines[unit.name] = exec_start[1:]
    for name, service in yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"].items():
        if service.get("image", "").startswith("strandwatch:"):
            lines[f"compose {name}"] = service["command"]
    for doc in kubernetes_documents():
        if doc["kind"] in ("DaemonSet", "Deployment"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                lines[f"{doc['kind']}/{doc['metadata']['name']}"] = container["args"]
    return lines


def test_every_deploy_command_line_parses_and_names_a_service_configuration():
    lines = deploy_command_lines()
    commands = {}
    for where, argv in lines.items():
        args = parse_command(argv)
        assert args.log_format == "json", where
        commands[where] = " ".join(filter(None, (args.command, getattr(args, "collector", None))))
        assert str(args.config).startswith("/etc/strandwatch/"), where
    assert commands["strandwatch-collect.service"] == "collect snmp"
    assert commands["strandwatch-agent.service"] == "agent"
    assert commands["DaemonSet/strandwatch-agent"] == "agent"
    assert set(commands.values()) == {"collect snmp", "agent", "ingest", "detect", "run"}
    assert all(parse_command(argv).follow for where, argv in lines.items() if commands[where] == "detect")


def test_the_agent_configuration_publishes():
    """The DaemonSet's agent.yaml is a service configuration with an agent section: the agent publishes."""
    from collector.config import parse_config

    config_map = next(doc for doc in kubernetes_documents()
                      if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "strandwatch-agent")
    document = yaml.safe_load(config_map["data"]["agent.yaml"])
    assert document["agent"]["sources"]
    tls = document["mqtt"].pop("tls")  # its files exist only in the pod
    assert tls["cert_file"] and tls["key_file"]
    config = parse_config(document, environ={})
    assert config.agent is not None and config.agent.sources["rdma"] == {"sysfs_root": "/host/sys"}


# --- Mosquitto: TLS, per-agent passwords, the ACL ---------------------------------------------

PASSWORDS = {"strandwatch-ingest": "ingest-pw", "node07": "node07-pw", "node08": "node08-pw"}


def start_broker(directory: Path, *, client_certificates: bool = False):
    """Debian's Mosquitto with deploy/mosquitto's configuration and ACL on a loopback port; (process, port).

    ``client_certificates`` uncomments its ``require_certificate`` and ``use_identity_as_username``.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    config = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    config = (config.replace("/mosquitto/config/", f"{directory}/").replace("/mosquitto/certs/", f"{directory}/")
              .replace("/mosquitto/data/", f"{directory}/").replace("listener 8883", f"listener {port} 127.0.0.1")
              .replace("log_dest stdout", f"log_dest file {directory}/mosquitto.log"))
    if client_certificates:
        assert "#require_certificate true\n#use_identity_as_username true\n" in config
        config = config.replace("#require_certificate true", "require_certificate true").replace(
            "#use_identity_as_username true", "use_identity_as_username true")
    (directory / "acl").write_text((DEPLOY / "mosquitto" / "acl").read_text())
    (directory / "mosquitto.conf").write_text(config + "user root\n")
    process = subprocess.Popen([binary, "-c", str(directory / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            assert process.poll() is None, (directory / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_mosquitto(tmp_path_factory):
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    directory = make_certs(tmp_path_factory.mktemp("mosquitto"))
    passwd = directory / "passwd"
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwd.exists() else []), str(passwd), user, password],
                       check=True, capture_output=True, timeout=10)
    process, port = start_broker(directory)
    yield port, directory / "ca.crt"
    process.terminate()
    process.wait(10)


def client(port: int, ca: Path, user: str, password: str, identifier: str):
    import aiomqtt

    tls = ssl.create_default_context(cafile=str(ca))
    return aiomqtt.Client("localhost", port, username=user, password=password, identifier=identifier,
                          tls_context=tls, protocol=aiomqtt.ProtocolVersion.V5, timeout=5)


async def test_wrong_credentials_and_plain_connections_are_refused(tls_mosquitto):
    import aiomqtt

    port, ca = tls_mosquitto
    with pytest.raises(aiomqtt.MqttError, match="(?i)not authori|bad user"):
        async with client(port, ca, "node07", "wrong-password", "wrong"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with client(port, ca, "intruder", "node07-pw", "intruder"):
            pass
    plain = aiomqtt.Client("127.0.0.1", port, username="node07", password="node07-pw", timeout=3)
    with pytest.raises(aiomqtt.MqttError):
        async with plain:
            pass


async def test_an_agent_may_publish_only_under_its_own_host(tls_mosquitto):
    port, ca = tls_mosquitto
    received: list[str] = []
    async with client(port, ca, "strandwatch-ingest", PASSWORDS["strandwatch-ingest"], "admin") as admin:
        await admin.subscribe("strandwatch/v1/#", qos=1)

        async def listen() -> None:
            async for message in admin.messages:
                received.append(str(message.topic))
                if str(message.topic) == "strandwatch/v1/dc1/rdma/node07":
                    return

        listener = asyncio.create_task(listen())
        async with client(port, ca, "node07", PASSWORDS["node07"], "node07") as agent:
            for topic in ("strandwatch/v1/dc1/rdma/node08",      # another host's topic
                          "strandwatch/v1/dc2/rdma/node07",      # another site
                          "strandwatch/v1/dc1/rdma/node07/x",    # deeper than allowed
                          "strandwatch/v1/dc1/gpu/node08"):
                await agent.publish(topic, b"forged", qos=1)
            await agent.publish("strandwatch/v1/dc1/rdma/node07", b"own", qos=1)
        await asyncio.wait_for(listener, 10)
        await asyncio.sleep(0.3)  # anything forged would have arrived before the last message
    assert received == ["strandwatch/v1/dc1/rdma/node07"]


# --- Mosquitto with require_certificate: client certificates instead of passwords ------------

@pytest.fixture(scope="module")
def cert_mosquitto(tmp_path_factory):
    """The deploy broker with client certificates required; certificates for an agent, ingest, and a stranger.

    ``other/`` holds a second CA that signed its own ``node07`` certificate. The password file is
    empty: with ``use_identity_as_username`` the certificate is the credential.
    """
    directory = make_certs(tmp_path_factory.mktemp("mosquitto-certs"), "node07", "strandwatch-ingest")
    make_certs(directory / "other", "node07")
    (directory / "passwd").write_text("")
    process, port = start_broker(directory, client_certificates=True)
    yield port, directory
    process.terminate()
    process.wait(10)


def cert_settings(port: int, directory: Path, tmp_path: Path, name: str, tls: TlsSettings, **overrides) -> MqttSettings:
    return MqttSettings(brokers=[("localhost", port)], site="dc1", host=name, tls=tls, timeout_s=5,
                        spool_dir=tmp_path / f"spool-{name}", **overrides)


async def test_a_publisher_with_a_certificate_from_the_ca_gets_through_and_its_points_land(cert_mosquitto, tmp_path):
    from collector.ingest import IngestService
    from collector.schema import Point
    from collector.store import AsyncEmbeddedStore, EmbeddedStore
    from collector.transport import MqttPublisher, MqttSubscription

    port, directory = cert_mosquitto
    ca = str(directory / "ca.crt")
    ingest_tls = TlsSettings(ca, str(directory / "strandwatch-ingest.crt"), str(directory / "strandwatch-ingest.key"))
    agent_tls = TlsSettings(ca, str(directory / "node07.crt"), str(directory / "node07.key"))
    store = EmbeddedStore(tmp_path / "metrics.db", retention=None)
    subscription = MqttSubscription(
        cert_settings(port, directory, tmp_path, "ingest", ingest_tls, client_id="ingest-certs"),
        ["$share/ingest/strandwatch/v1/#"])
    service = IngestService(subscription, AsyncEmbeddedStore(store), linger_s=0.05)
    await subscription.start()
    await subscription.wait_connected()
    consuming = asyncio.create_task(service.run())
    t0 = 1_700_000_000_000_000_000
    async with MqttPublisher(cert_settings(port, directory, tmp_path, "node07", agent_tls)) as publisher:
        assert publisher.connected
        for step in range(5):
            await publisher.publish([Point("infiniband", {"host": "node07", "device": "mlx5_0", "port": str(port_)},
                                           {"port_xmit_data": step * 100 + port_}, t0 + step * 10**10)
                                     for port_ in range(1, 9)], source="rdma")
        # The certificate's CN is its user name: the ACL keeps it to its own host's topics.
        await publisher.publish([Point("infiniband", {"host": "node08"}, {"port_xmit_data": 1}, t0)],
                                source="rdma", host="node08")
        assert publisher.published == 6 and publisher.spooled == 0
    deadline = time.monotonic() + 15
    while service.stats.points < 40:
        assert time.monotonic() < deadline, f"only {service.stats.points} of 40 points stored"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the forged node08 batch would have arrived by now
    await subscription.close()
    await consuming
    frame = store.read("infiniband")
    store.close()
    assert len(frame) == 40 and set(frame["host"]) == {"node07"}


@pytest.mark.parametrize("who, reason", [
    ("without a certificate", "certificate required"),
    ("with a certificate from another CA", "unknown ca"),
])
async def test_a_publisher_without_a_certificate_of_the_ca_is_refused_with_a_clear_error(
        cert_mosquitto, tmp_path, caplog, who, reason):
    from collector.schema import Point
    from collector.transport import MqttPublisher

    port, directory = cert_mosquitto
    ca = str(directory / "ca.crt")
    tls = TlsSettings(ca) if who == "without a certificate" else \
        TlsSettings(ca, str(directory / "other" / "node07.crt"), str(directory / "other" / "node07.key"))
    publisher = MqttPublisher(cert_settings(port, directory, tmp_path, "node07", tls, reconnect_min_s=5))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="collector.transport.mqtt"):
        await publisher.start()
        # Refused during the TLS handshake's aftermath, at once: not after the 5 s CONNACK timeout.
        assert time.monotonic() - started < 4
        await publisher.publish([Point("infiniband", {"host": "node07"}, {"port_xmit_data": 1}, 1)], source="rdma")
        await publisher.close(drain_timeout=0)
    assert (publisher.connected, publisher.published, publisher.spooled) == (False, 0, 1)
    refusals = [record.getMessage() for record in caplog.records if "cannot connect" in record.getMessage()]
    assert refusals and reason in refusals[0], caplog.text
