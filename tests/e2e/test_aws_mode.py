"""The platform as it runs on AWS, without an AWS account.

- moto's server (``ThreadedMotoServer``) is DynamoDB (state and audit tables), S3 (the
  recordings bucket) and Secrets Manager (the master key), created as the template creates
  them.
- The control plane is the five Lambda function modules, cold-started from their
  environment and served on Lambda's Invoke API (``LambdaEndpoint``), the path the proxies'
  ``LambdaInvoke`` takes on AWS.
- Two proxy-only ``jumpgate start`` processes (``services: [proxy]``, ``control_plane.type:
  lambda``) share one SSH host key, as a fleet behind one NLB does. The functions tell nodes
  to dial proxy 1's tunnel port and users proxy 2's SSH port: the load balancer's choice,
  made deterministic.
- The operator creates the tenant with ``jumpgate tenants create`` on the tables and the
  secret; the admin signs up and joins the node through proxy 2, the node's agent joins and
  holds its tunnel on proxy 1, and the admin's sessions reach it through proxy 2, which
  relays to proxy 1 on its peer port.
"""

import asyncio
import http.client
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import boto3
import pytest
from moto.server import ThreadedMotoServer

from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.lambdas.runtime import entry_point
from jumpgate.control_plane.recordings.s3 import ensure_bucket
from jumpgate.control_plane.store.dynamodb import ensure_table
from jumpgate.protocol.functions import Function
from tests.e2e.conftest import (
    BIN,
    LOGIN,
    Node,
    Shell,
    audit_events,
    join_command,
    signup_and_login,
    wait_for_line,
    write_ssh_config,
)
from tests.e2e.test_recordings import jump, uploads
from tests.functional.lambda_endpoint import LambdaEndpoint
from tests.support import ca_issued_certificate, free_ports

REGION = "us-east-1"
STATE, AUDIT, BUCKET, SECRET = "jg-state", "jg-audit", "jg-recordings", "jumpgate/master-key"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass
class Proxy:
    """One proxy-only process of the fleet."""

    directory: Path
    port: int  # HTTPS
    ssh_port: int
    tunnel_port: int
    peer_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "proxy.log"

    def start(self, lambda_url: str, host_key: str, web: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "jumpgate.yaml"
        config.write_text(
            f"data_dir: {self.directory / 'data'}\n"
            "services: [proxy]\n"
            f"web_listen_addr: 127.0.0.1:{self.port}\n"
            f"ssh_listen_addr: 127.0.0.1:{self.ssh_port}\n"
            f"tunnel_listen_addr: 127.0.0.1:{self.tunnel_port}\n"
            f"peer_listen_addr: 127.0.0.1:{self.peer_port}\n"
            f"control_plane: {{type: lambda, region: {REGION}, endpoint: '{lambda_url}'}}\n"
        )
        env = {**os.environ, **CREDENTIALS, **web, "JUMPGATE_PROXY_HOST_KEY": host_key}
        env.pop("AWS_ENDPOINT_URL", None)  # a proxy reaches AWS only through the functions
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [str(BIN / "jumpgate"), "start", "-c", str(config)], stdout=out, stderr=out, env=env
            )
        wait_for_line(self.log, "platform started", self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    @property
    def proxy_id(self) -> str:
        """The id this proxy reports itself alive with."""
        for line in self.log.read_text().splitlines():
            if '"peering"' in line:
                return str(json.loads(line)["proxy_id"])
        raise AssertionError(f"no peering line in {self.log}")


@dataclass
class AWSSite:
    moto_url: str
    proxies: tuple[Proxy, Proxy]
    admin: Shell
    node: Node
    ssh_config: Path


def _moto(port: int) -> str:
    """Tables, bucket and secret as the template makes them."""
    url = f"http://127.0.0.1:{port}"
    reset = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    reset.request("POST", "/moto-api/reset")  # moto's state is per process: start from nothing
    assert reset.getresponse().status == 200
    reset.close()
    ensure_table(STATE, REGION, url)
    ensure_audit_table(AUDIT, REGION, url)
    ensure_bucket(f"s3://{BUCKET}/sessions?region={REGION}&endpoint={url}")
    boto3.client("secretsmanager", region_name=REGION, endpoint_url=url).create_secret(
        Name=SECRET,
        SecretString=secrets.token_urlsafe(48),  # as GenerateSecretString makes it
    )
    return url


def _functions_environment(url: str, proxies: tuple[Proxy, Proxy], host_key: str) -> dict[str, str]:
    return {
        **CREDENTIALS,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
        "JUMPGATE_PUBLIC_ADDR": "localhost",
        "JUMPGATE_STATE_TABLE": STATE,
        "JUMPGATE_AUDIT_TABLE": AUDIT,
        "JUMPGATE_RECORDINGS_URI": f"s3://{BUCKET}/sessions",
        "JUMPGATE_MASTER_KEY_SECRET": SECRET,
        "JUMPGATE_TUNNEL_PUBLIC_PORT": str(proxies[0].tunnel_port),
        "JUMPGATE_SSH_PUBLIC_PORT": str(proxies[1].ssh_port),
        "JUMPGATE_PROXY_HOST_KEYS": host_key,
        "POWERTOOLS_METRICS_NAMESPACE": "Jumpgate",
    }


def _operator_config(directory: Path, url: str, proxy: Proxy) -> Path:
    config = directory / "operator.yaml"
    config.write_text(
        f"data_dir: {directory / 'operator'}\n"
        f"web_listen_addr: 127.0.0.1:{proxy.port}\n"
        f"storage: {{type: dynamodb, table_name: {STATE}, region: {REGION}, "
        f"endpoint: '{url}', master_key_secret: {SECRET}}}\n"
        f"audit_events_uri: ['dynamodb://{AUDIT}']\n"
    )
    return config


@pytest.fixture
def aws_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AWSSite]:
    moto_port, *ports = free_ports(9)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    proxies = (
        Proxy(tmp_path / "proxy-1", ports[0], ports[1], ports[2], ports[3]),
        Proxy(tmp_path / "proxy-2", ports[4], ports[5], ports[6], ports[7]),
    )
    key = asyncssh.generate_private_key("ssh-ed25519")
    private, public = key.export_private_key().decode(), key.export_public_key().decode().strip()
    # The fleet's web certificate, issued by a CA (as on AWS) and shared, as ECS injects it
    ca_pem, cert_pem, key_pem = ca_issued_certificate("acme.localhost", "localhost")
    web = {"JUMPGATE_TLS_CERT": cert_pem, "JUMPGATE_TLS_KEY": key_pem}
    web_ca = tmp_path / "web-ca.pem"
    web_ca.write_text(ca_pem)
    try:
        url = _moto(moto._server.port)  # type: ignore[union-attr]
        for name, value in _functions_environment(url, proxies, public).items():
            monkeypatch.setenv(name, value)
        handlers = {f"jumpgate-{f.value}": entry_point(f) for f in Function}
        with LambdaEndpoint(handlers) as functions:
            for proxy in proxies:
                proxy.start(functions.url, private, web)
            site = _joined(tmp_path, url, proxies, public, web_ca)
            yield site
            if site.node.process is not None and site.node.process.poll() is None:
                site.node.kill(signal.SIGTERM)
    finally:
        for proxy in proxies:
            proxy.stop()
        moto.stop()


def _joined(
    directory: Path, url: str, proxies: tuple[Proxy, Proxy], proxy_key: str, web_ca: Path
) -> AWSSite:
    admin = Shell(directory / "home")
    operator = _operator_config(directory, url, proxies[1])
    argv = ["jumpgate", "tenants", "create", "acme", "--admin", "alice", "--logins", LOGIN]
    created = admin.ok(*argv, "--format", "json", "-c", str(operator)).json()
    signup_and_login(admin, proxies[1], created["invite_token"], "alice")
    joining = admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    command, env = join_command(joining)
    assert f"--auth-server=acme.localhost:{proxies[1].port}" in command, command
    # The functions are told of no self-signed certificate: the proxies' is a CA's (as on
    # AWS), which the node trusts, so the command has no --insecure
    assert "--insecure" not in command, command
    node_dir = directory / "node"
    node_dir.mkdir()
    command = [c.replace(f":{proxies[1].port}", f":{proxies[0].port}") for c in command]
    env = {**env, "SSL_CERT_FILE": str(web_ca)}
    node = Node(node_dir, [*command, "--data-dir", str(node_dir), "--nodename", "web-1"], env=env)
    node.start()  # joins through proxy 1, and holds its tunnel there
    node.wait_tunnel()
    identity = json.loads((node_dir / "node" / "identity.json").read_text())
    ssh_config = write_ssh_config(
        directory, directory / "home", proxies[1], identity["host_ca_keys"][0], proxy_key
    )
    return AWSSite(url, proxies, admin, node, ssh_config)


def _audit_items(url: str) -> list[dict[str, Any]]:
    """Every event in the DynamoDB audit table, as stored."""
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=url)
    items: list[dict[str, Any]] = client.scan(TableName=AUDIT, ConsistentRead=True)["Items"]
    return items


def test_a_node_on_proxy_1_is_reached_through_proxy_2_and_recorded_in_s3(
    aws_site: AWSSite,
) -> None:
    proxy_1, proxy_2 = aws_site.proxies

    # The node's tunnel is on proxy 1, the user's connection on proxy 2.
    assert '"tunnel up"' in proxy_1.log.read_text()
    assert '"tunnel up"' not in proxy_2.log.read_text()
    listed = aws_site.admin.ok("jump", "ls", "--format", "json").json()
    assert [(n["nodename"], n["online"]) for n in listed] == [("web-1", True)]

    done = jump(aws_site, "ssh", "web-1", "echo relayed through $((6 * 7)) && seq 1 2000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"relayed through 42\n")
    assert done.stdout.endswith(b"1999\n2000\n")
    plain = subprocess.run(
        ["ssh", "-F", str(aws_site.ssh_config), "web-1", "echo plain openssh"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == b"plain openssh\n"

    # The recording went node -> proxy 1 -> the internal function -> S3, and was assembled
    # by a multipart upload.
    rows = uploads(aws_site, 2)
    assert len(rows) == 2, rows
    played = jump(aws_site, "play", rows[0]["session_id"], "--format", "text")
    assert played.returncode == 0, played.stderr
    assert played.stdout == done.stdout
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=aws_site.moto_url)
    key = f"sessions/acme/{rows[0]['session_id']}"
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"].strip('"').rpartition("-")[2].isdigit(), head["ETag"]  # multipart
    assert s3.head_object(Bucket=BUCKET, Key=key, PartNumber=1)["PartsCount"] >= 1
    assert head["ServerSideEncryption"] == "AES256"
    aws_site.admin.ok("jumpctl", "recordings", "verify", rows[0]["session_id"])

    # Audit events are in the DynamoDB table: the user's proxy names the proxy it relayed to.
    starts = audit_events(aws_site, "session.start", 4)
    relayed = [e for e in starts if e.get("origin") == "proxy"]
    assert relayed, starts
    assert all(e["proxy"] == proxy_1.proxy_id for e in relayed), starts
    assert {e.get("origin") for e in starts} == {"proxy", "node"}
    # ... and passed the session's id on through the peer: the node's events carry it (0030)
    node_ids = {e["session_id"] for e in starts if e.get("origin") == "node"}
    assert {e["session_id"] for e in relayed} == node_ids, starts
    stored = {item["type"]["S"] for item in _audit_items(aws_site.moto_url)}
    assert {"user.login", "session.start", "session.end", "session.upload", "exec"} <= stored


def test_peers_refuse_what_they_must(aws_site: AWSSite) -> None:
    proxy_1, _ = aws_site.proxies

    # A node no proxy holds: one line, from the user's proxy, after asking the platform.
    missing = jump(aws_site, "ssh", "nosuch", "true")
    assert missing.returncode != 0
    assert b"not online in cluster 'acme'" in missing.stderr

    # The peer port takes only the platform's proxies: a key without a proxy certificate
    # (here, the node's own) is refused before any channel.
    async def as_stranger() -> None:
        key = asyncssh.import_private_key(
            (aws_site.node.directory / "node" / "host_key").read_bytes()
        )
        async with asyncssh.connect(
            "127.0.0.1",
            proxy_1.peer_port,
            username=proxy_1.proxy_id,
            client_keys=[key],
            known_hosts=None,
            config=[],
            agent_path=None,
        ):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(as_stranger())

    # The node's tunnel drops: proxy 2 finds it offline (its record names no proxy now).
    aws_site.node.kill(signal.SIGTERM)
    gone = jump(aws_site, "ssh", "web-1", "true")
    assert gone.returncode != 0
    assert b"not online in cluster 'acme'" in gone.stderr
