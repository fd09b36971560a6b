"""infra/cdk, the whole platform: ``python app.py`` synthesizes it offline (in .venv-cdk,
with node) under cdk-nag's AwsSolutions checks, which fail the synth on any finding not
acknowledged with a reason; then assertions on the synthesized template."""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.xdist_group("cdk")  # one worker builds the module fixture once


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = os.environ.get("JUMPGATE_CDK_PYTHON", str(ROOT / ".venv-cdk" / "bin" / "python"))
    assert Path(python).exists(), f"{python} is missing: run make test (it builds .venv-cdk)"
    out = tmp_path_factory.mktemp("cdk.out")
    env = {
        **os.environ,
        "CDK_OUTDIR": str(out),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    env.pop("CDK_CONTEXT_JSON", None)
    synth = subprocess.run(
        [python, "app.py"],
        cwd=ROOT / "infra" / "cdk",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert synth.returncode == 0, synth.stdout[-4000:] + synth.stderr[-4000:]
    assert "ERROR" not in synth.stdout + synth.stderr  # cdk-nag: nothing unacknowledged
    template: dict[str, Any] = json.loads((out / "Jumpgate.template.json").read_text())
    return template


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _statements(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in _of_type(template, kind).values():
            yield from policy["Properties"]["PolicyDocument"]["Statement"]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_control_plane_is_template_yaml_included_not_described_twice(
    synthesized: dict[str, Any],
) -> None:
    sam = yaml.safe_load((ROOT / "template.yaml").read_text())
    assert synthesized["Transform"] == sam["Transform"]
    for name, resource in sam["Resources"].items():
        assert synthesized["Resources"][name]["Type"] == resource["Type"], name
        assert synthesized["Resources"][name]["Properties"].keys() == (
            resource["Properties"].keys()
        ), name
    # nothing the template describes is described again by the CDK code
    described = {k for k, v in synthesized["Resources"].items() if v["Type"] in _SAM_KINDS}
    assert described == {k for k, v in sam["Resources"].items() if v["Type"] in _SAM_KINDS}


_SAM_KINDS = {
    "AWS::DynamoDB::Table",
    "AWS::Serverless::Function",
    "AWS::SecretsManager::Secret",
    "AWS::IAM::ManagedPolicy",
}


def test_tables_keep_pitr_sse_and_ttl(synthesized: dict[str, Any]) -> None:
    tables = _of_type(synthesized, "AWS::DynamoDB::Table")
    assert len(tables) == 2
    for table in tables.values():
        spec = table["Properties"]
        assert spec["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert spec["SSESpecification"] == {"SSEEnabled": True}
        assert spec["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
        assert spec["BillingMode"] == "PAY_PER_REQUEST"


def test_every_bucket_is_private_encrypted_and_tls_only(synthesized: dict[str, Any]) -> None:
    buckets = _of_type(synthesized, "AWS::S3::Bucket")
    assert len(buckets) == 3  # recordings, their access logs, the NLB's access logs
    for name, bucket in buckets.items():
        spec = bucket["Properties"]
        assert spec["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert "ServerSideEncryptionConfiguration" in spec["BucketEncryption"], name
    policies = _of_type(synthesized, "AWS::S3::BucketPolicy").values()
    tls_only = [
        s
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(tls_only) == 3


def test_no_wildcard_actions_on_tables_or_anywhere(synthesized: dict[str, Any]) -> None:
    statements = list(_statements(synthesized))
    assert statements
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        for action in _listed(statement["Action"]):
            assert "*" not in action, statement
        if any(a.startswith("dynamodb:") for a in _listed(statement["Action"])):
            assert statement["Resource"] != "*", statement
            assert "dynamodb:Scan" not in _listed(statement["Action"])


def test_the_proxies_may_only_invoke_the_five_functions(synthesized: dict[str, Any]) -> None:
    invokes = [
        s for s in _statements(synthesized) if "lambda:InvokeFunction" in _listed(s["Action"])
    ]
    assert len(invokes) == 1
    resources = json.dumps(invokes[0]["Resource"])
    for function in ("Auth", "Tokens", "Resources", "Audit", "Internal"):
        assert f'"Ref": "{function}Function"' in resources
    assert "Sweeper" not in resources


def test_the_nlb_listens_on_443_3023_3024_in_two_azs(synthesized: dict[str, Any]) -> None:
    listeners = _of_type(synthesized, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert sorted(lst["Properties"]["Port"] for lst in listeners) == [443, 3023, 3024]
    assert {lst["Properties"]["Protocol"] for lst in listeners} == {"TCP"}
    [nlb] = _of_type(synthesized, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert nlb["Properties"]["Type"] == "network"
    assert nlb["Properties"]["Scheme"] == "internet-facing"
    assert len(nlb["Properties"]["Subnets"]) == 2
    subnets = _of_type(synthesized, "AWS::EC2::Subnet").values()
    zones = {json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets}
    assert len(zones) == 2
    targets = _of_type(synthesized, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert sorted(t["Properties"]["Port"] for t in targets) == [3023, 3024, 3080]
    for target in targets:
        spec = target["Properties"]
        assert (spec["HealthCheckProtocol"], spec["HealthCheckPath"]) == ("HTTPS", "/webapi/ping")
        assert spec["HealthCheckPort"] == "3080"


def test_the_fleet_runs_on_fargate_in_two_azs_and_scales(synthesized: dict[str, Any]) -> None:
    [service] = _of_type(synthesized, "AWS::ECS::Service").values()
    network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert len(network["Subnets"]) == 2
    assert network["AssignPublicIp"] == "DISABLED"
    assert service["Properties"]["LaunchType"] == "FARGATE"
    [target] = _of_type(synthesized, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (2, 10)
    [scaling] = _of_type(synthesized, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    assert scaling["Properties"]["PolicyType"] == "TargetTrackingScaling"


def test_the_proxy_container_is_non_root_and_gets_its_secrets_from_secrets_manager(
    synthesized: dict[str, Any],
) -> None:
    [task] = _of_type(synthesized, "AWS::ECS::TaskDefinition").values()
    assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    [container] = task["Properties"]["ContainerDefinitions"]
    assert container["User"] == "10001"
    assert container["ReadonlyRootFilesystem"] is True
    secrets = {s["Name"]: json.dumps(s["ValueFrom"]) for s in container["Secrets"]}
    assert set(secrets) == {"JUMPGATE_PROXY_HOST_KEY", "JUMPGATE_TLS_CERT", "JUMPGATE_TLS_KEY"}
    assert "secretsmanager" in secrets["JUMPGATE_TLS_CERT"]
    assert ":certificate::" in secrets["JUMPGATE_TLS_CERT"]
    [variable] = container["Environment"]
    assert variable["Name"] == "JUMPGATE_CONFIG_YAML"
    assert '\\"type\\":\\"lambda\\"' in json.dumps(variable["Value"])  # a proxy-only process
    ports = sorted(p["ContainerPort"] for p in container["PortMappings"])
    assert ports == [3021, 3023, 3024, 3080]


def test_tenant_subdomains_point_at_the_nlb(synthesized: dict[str, Any]) -> None:
    records = _of_type(synthesized, "AWS::Route53::RecordSet").values()
    names = sorted(r["Properties"]["Name"] for r in records)
    assert names == ["*.example.sh.", "example.sh."]
    assert all("AliasTarget" in r["Properties"] for r in records)


def test_peering_is_open_only_between_proxies(synthesized: dict[str, Any]) -> None:
    [group] = _of_type(synthesized, "AWS::EC2::SecurityGroup").values()
    public = {rule["FromPort"] for rule in group["Properties"]["SecurityGroupIngress"]}
    assert public == {3080, 3023, 3024}
    [peer] = _of_type(synthesized, "AWS::EC2::SecurityGroupIngress").values()
    assert peer["Properties"]["FromPort"] == 3021
    assert "SourceSecurityGroupId" in peer["Properties"]
