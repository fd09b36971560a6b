"""template.yaml, the serverless control plane: what it must hold, checked on the file, and
the whole of it translated by aws-sam-translator and linted by cfn-lint (in .venv-cfn)."""

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jumpgate.protocol.functions import Function

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


pytestmark = pytest.mark.xdist_group("template")  # one worker builds the module fixture once


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
    return loaded


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_translated_by_sam_and_clean_under_cfn_lint() -> None:
    python = os.environ.get("JUMPGATE_CFN_PYTHON", str(ROOT / ".venv-cfn" / "bin" / "python"))
    assert Path(python).exists(), f"{python} is missing: run make test (it builds .venv-cfn)"
    checked = subprocess.run(
        [python, str(ROOT / "infra" / "check_template.py"), str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "cfn-lint clean" in checked.stdout


def test_tables_are_on_demand_with_pitr_sse_and_ttl(template: dict[str, Any]) -> None:
    tables = _of_type(template, "AWS::DynamoDB::Table")
    assert set(tables) == {"StateTable", "AuditTable"}
    for table in tables.values():
        spec = table["Properties"]
        assert spec["BillingMode"] == "PAY_PER_REQUEST"
        assert spec["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert spec["SSESpecification"] == {"SSEEnabled": True}
        assert spec["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
        assert table["DeletionPolicy"] == "Retain"


def test_the_bucket_is_private_encrypted_versioned_and_tls_only(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["RecordingsBucket"]["Properties"]
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    lifecycle = bucket["LifecycleConfiguration"]["Rules"]
    assert any("AbortIncompleteMultipartUpload" in rule for rule in lifecycle)
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogsBucket"}
    for name in ("RecordingsBucket", "AccessLogsBucket"):
        [policy] = [
            p
            for p in _of_type(template, "AWS::S3::BucketPolicy").values()
            if p["Properties"]["Bucket"] == {"Ref": name}
        ]
        deny = policy["Properties"]["PolicyDocument"]["Statement"][0]
        assert deny["Effect"] == "Deny"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in _of_type(template, "AWS::IAM::ManagedPolicy").values():
        found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_no_wildcard_actions_or_resources(template: dict[str, Any]) -> None:
    for statement in _statements(template):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert not any("*" in action for action in actions), statement
        assert statement["Resource"] != "*", statement
    assert "dynamodb:Scan" not in str(_statements(template))


def test_one_function_per_route_group_with_its_own_logs(template: dict[str, Any]) -> None:
    functions = _of_type(template, "AWS::Serverless::Function")
    handlers = {f["Properties"]["Handler"] for f in functions.values()}
    modules = [f.value for f in Function] + ["sweeper"]
    assert handlers == {f"jumpgate.control_plane.lambdas.{m}.handler" for m in modules}
    for name in handlers:
        module = name.removesuffix(".handler").replace(".", "/") + ".py"
        assert (ROOT / module).exists(), module
    globals_ = template["Globals"]["Function"]
    assert (globals_["Runtime"], globals_["Architectures"]) == ("python3.12", ["arm64"])
    logs = _of_type(template, "AWS::Logs::LogGroup")
    named = {str(group["Properties"]["LogGroupName"]) for group in logs.values()}
    for function in functions:
        assert any(function in name for name in named), f"{function} has no log group"
    assert all("RetentionInDays" in group["Properties"] for group in logs.values())


def test_only_the_functions_that_touch_recordings_may(template: dict[str, Any]) -> None:
    functions = _of_type(template, "AWS::Serverless::Function")
    with_s3 = {
        name
        for name, function in functions.items()
        if any("Recordings" in str(policy) for policy in function["Properties"]["Policies"])
    }
    assert with_s3 == {"AuditFunction", "InternalFunction", "SweeperFunction"}


def test_the_sweeper_runs_on_a_schedule(template: dict[str, Any]) -> None:
    events = template["Resources"]["SweeperFunction"]["Properties"]["Events"]
    [schedule] = events.values()
    assert schedule["Type"] == "Schedule"
    assert schedule["Properties"]["Schedule"] == "rate(5 minutes)"
