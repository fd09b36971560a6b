"""moto's server as the platform's AWS: the tables, bucket and secret the functions expect,
and the environment a function (or a client) needs to use them."""

import base64
import logging
import os
import secrets
from contextlib import ExitStack

import boto3
from moto.server import ThreadedMotoServer

from bench.harness import free_port
from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.store.dynamodb import ensure_table

REGION = "us-east-1"


def moto_environment(stack: ExitStack) -> dict[str, str]:
    """moto's server with the tables, bucket and secret the functions expect; their env."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stack.callback(server.stop)
    endpoint = f"http://127.0.0.1:{port}"
    environ = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "JUMPGATE_PUBLIC_ADDR": "example.sh",
        "JUMPGATE_STATE_TABLE": "jg-state",
        "JUMPGATE_AUDIT_TABLE": "jg-audit",
        "JUMPGATE_RECORDINGS_URI": "s3://jg-recordings/sessions",
        "JUMPGATE_MASTER_KEY_SECRET": "jumpgate/master-key",
        "POWERTOOLS_METRICS_NAMESPACE": "Jumpgate",
    }
    os.environ.update({k: environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    ensure_table("jg-state", REGION, endpoint)
    ensure_audit_table("jg-audit", REGION, endpoint)
    boto3.client("s3", region_name=REGION, endpoint_url=endpoint).create_bucket(
        Bucket="jg-recordings"
    )
    boto3.client("secretsmanager", region_name=REGION, endpoint_url=endpoint).create_secret(
        Name="jumpgate/master-key", SecretString=base64.b64encode(secrets.token_bytes(32)).decode()
    )
    return environ
