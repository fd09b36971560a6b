"""The daemon's config: flags over file over defaults, and one line naming a bad key."""

from datetime import timedelta
from pathlib import Path

import pytest

from jumpgate.cli.daemon.config import ConfigError, join_token, load
from jumpgate.cli.daemon.main import _config, parser


def test_flags_override_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(
        "public_addr: example.sh\nweb_listen_addr: 0.0.0.0:443\ndata_dir: /srv/jg\n"
        "static_tokens:\n  - {tenant: acme, token: abcdefghijklmnopq}\n"
    )
    config = load(
        path, {"web_listen_addr": "127.0.0.1:8443", "services": "auth,proxy", "data_dir": None}
    )
    assert config.public_addr == "example.sh"
    assert config.web_listen_addr == "127.0.0.1:8443"
    assert config.data_dir == Path("/srv/jg")
    assert config.services == ("auth", "proxy")
    assert config.static_tokens[0].system_roles == ("node",)
    assert config.notes == ()
    assert config.ssh_listen_addr == "127.0.0.1:3023"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "web_listen_addr: 'host:99999'\n",
            "web_listen_addr: address 'host:99999' has an invalid port",
        ),
        ("services: [kube]\n", "services: 'kube' is not served by this release"),
        ("bogus: 1\n", "unknown config key(s): bogus"),
        ("public_addr: 'a:1'\n", "public_addr: 'a:1' must be a host name, no port"),
        ("storage: {type: redis}\n", "storage.type: 'redis' is not sqlite or dynamodb"),
        ("storage: {type: dynamodb}\n", "storage: dynamodb needs table_name and region"),
        (
            "services: [proxy]\n",
            "services: a proxy without auth needs control_plane.type: lambda "
            "(or add auth to services)",
        ),
        (
            "control_plane: {type: lambda, region: us-east-1}\n",
            "control_plane.type lambda is for proxy-only processes: drop auth",
        ),
        (
            "services: [proxy]\ncontrol_plane: {type: lambda}\n",
            "control_plane: lambda needs region",
        ),
        (
            "services: [proxy]\ncontrol_plane: {type: lambda, region: r, functions: {kms: f}}\n",
            "control_plane.functions: no function named kms",
        ),
        ("control_plane: {type: grpc}\n", "control_plane.type: 'grpc' is not in-process or lambda"),
        ("control_plane: lambda\n", "control_plane: must be a mapping of type, region, endpoint"),
        ("storage: {typ: sqlite}\n", "storage: unknown key(s) typ; use type, path, table_name"),
        ("peer_public_addr: 'a:b'\n", "peer_public_addr: address 'a:b' has an invalid port"),
        (
            "storage: {master_key_secret: jumpgate/master-key}\n",
            "storage: master_key_secret needs region",
        ),
        (
            "static_tokens: [{tenant: acme, token: short}]\n",
            "static_tokens: a token must be at least 16",
        ),
        ("static_tokens: [{tenant: Bad!, token: abcdefghijklmnopq}]\n", "is not a DNS label"),
        ("- a list\n", "must be a mapping"),
        ("node_gone_after: soon\n", "node_gone_after: invalid duration 'soon'"),
        ("key: [unclosed\n", "is not valid YAML"),
        ("audit_retention: 1h\n", "audit_retention: keep audit events at least 1d"),
        (
            "audit_events_uri: [s3://bucket]\n",
            "audit_events_uri: 's3://bucket' is not file:///ABSOLUTE/PATH or stdout://",
        ),
        ("audit_events_uri: file://rel.log\n", "is not file:///ABSOLUTE/PATH"),
        ("peer_public_addr: [1]\n", "peer_public_addr: must be text, not [1]"),
        ("node_gone_after:\n", "node_gone_after: must be text, not None"),
        ("audit_events_uri: [5]\n", "audit_events_uri: must be a list of text, not [5]"),
        ("insecure: 1\n", "insecure: must be true or false, not 1"),
        ("storage: {region: [a]}\n", "storage.region: must be text, not ['a']"),
        (
            "services: [proxy]\ncontrol_plane: {type: lambda, region: r, functions: [auth]}\n",
            "control_plane.functions: must be a mapping of names to text",
        ),
        ("api_workers: 0\n", "api_workers: 0 must be a whole number from 1 to 256"),
        ("internal_workers: two\n", "internal_workers: 'two' must be a whole number"),
        (
            "api_workers: 4\napi_workers_per_tenant: 5\n",
            "api_workers_per_tenant: 5 is more than api_workers (4)",
        ),
        ("login_source_rate: -1\n", "login_source_rate: -1 must be a number, 0 or more"),
        ("login_user_burst: 0\n", "login_user_burst: 0 must be a whole number, 1 or more"),
        (
            "api_workers: 4\napi_workers_per_tenant: 2\nlogin_workers_per_tenant: 3\n",
            "login_workers_per_tenant: 3 with api_workers_per_tenant (2) is more than "
            "api_workers (4)",
        ),
        ("login_workers_per_tenant: 0\n", "login_workers_per_tenant: 0 must be a whole number"),
        ("tenant_queue: -1\n", "tenant_queue: -1 must be a whole number from 0 to 100000"),
        (
            "tenant_queue_per_source: 0\n",
            "tenant_queue_per_source: 0 must be a whole number from 1 to 100000",
        ),
        ("login_tenant_rate: -1\n", "login_tenant_rate: -1 must be a number, 0 or more"),
        ("login_tenant_burst: 0\n", "login_tenant_burst: 0 must be a whole number, 1 or more"),
        ("anonymous_source_rate: -2\n", "anonymous_source_rate: -2 must be a number"),
        ("anonymous_source_burst: 0\n", "anonymous_source_burst: 0 must be a whole number"),
    ],
    ids=[
        "bad-port",
        "unserved-role",
        "unknown-key",
        "public-addr-port",
        "storage-type",
        "dynamodb-incomplete",
        "proxy-without-control-plane",
        "lambda-beside-auth",
        "lambda-without-region",
        "unknown-function",
        "control-plane-type",
        "section-not-mapping",
        "section-unknown-key",
        "peer-public-addr",
        "secret-without-region",
        "short-static-token",
        "bad-tenant",
        "not-mapping",
        "bad-gone-after",
        "bad-yaml",
        "short-retention",
        "unknown-sink",
        "relative-sink",
        "list-for-text",
        "nothing-for-text",
        "number-in-list",
        "number-for-flag",
        "list-in-section",
        "list-for-mapping",
        "no-api-workers",
        "text-internal-workers",
        "tenant-share-above-pool",
        "negative-login-source-rate",
        "no-login-user-burst",
        "login-share-above-pool",
        "no-login-workers",
        "negative-queue",
        "no-source-share",
        "negative-tenant-rate",
        "no-tenant-burst",
        "negative-anonymous-rate",
        "no-anonymous-burst",
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as raised:
        load(path, {})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value).strip()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.yaml", {})


def test_a_proxy_on_lambda_names_each_function(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "services: [proxy]\n"
        "peer_listen_addr: 0.0.0.0:3021\n"
        "peer_public_addr: auto\n"
        "control_plane: {type: lambda, region: eu-west-1, function_prefix: jg-prod-,"
        " functions: {internal: jg-internal-v2}}\n"
    )
    monkeypatch.setenv("JUMPGATE_CONFIG_YAML", text)  # as an ECS task passes it
    config = load(None, {})
    assert config.control_plane.region == "eu-west-1"
    assert config.function_names() == {
        "auth": "jg-prod-auth",
        "tokens": "jg-prod-tokens",
        "resources": "jg-prod-resources",
        "audit": "jg-prod-audit",
        "internal": "jg-internal-v2",
    }
    monkeypatch.setenv("JUMPGATE_CONFIG_YAML", "roles: [\n")
    with pytest.raises(ConfigError, match="JUMPGATE_CONFIG_YAML is not valid YAML"):
        load(None, {})


def test_a_dynamodb_audit_uri_selects_the_audit_table() -> None:
    storage = {"type": "dynamodb", "table_name": "jg-state", "region": "eu-west-1"}
    config = load(
        None,
        {"storage": storage, "audit_events_uri": ["dynamodb://jg-events", "stdout://"]},
    )
    assert config.audit_table() == ("jg-events", "eu-west-1")
    assert config.sink_uris() == ("stdout://",)
    other = load(None, {"audit_events_uri": "dynamodb://jg-events?region=us-west-2"})
    assert other.audit_table() == ("jg-events", "us-west-2")
    with pytest.raises(ConfigError, match="needs a table name and a region"):
        load(None, {"audit_events_uri": "dynamodb://jg-events"})
    with pytest.raises(ConfigError, match="at most one dynamodb://TABLE"):
        load(None, {"storage": storage, "audit_events_uri": ["dynamodb://a", "dynamodb://b"]})


def test_a_number_where_text_goes_is_taken_as_its_text(tmp_path: Path) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text("nodename: 1234\nstorage: {region: 5}\n")  # YAML reads both as numbers
    config = load(path, {})
    assert (config.nodename, config.storage.region) == ("1234", "5")


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "invalid duration 'soon'"), ("0s", "from 1s to 10m"), ("1h", "from 1s to 10m")],
    ids=["not-a-duration", "zero", "longer-than-ecs-waits"],
)
def test_drain_timeout_is_a_bounded_duration(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(f"drain_timeout: {value}\n")
    with pytest.raises(ConfigError, match=f"drain_timeout: .*{message}"):
        load(path, {})
    path.write_text("drain_timeout: 3s\n")
    assert load(path, {}).drain_timeout == timedelta(seconds=3)  # parsed once, here


def test_capacity_settings_are_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text("api_workers: 16\napi_workers_per_tenant: 4\nlogin_source_rate: 0\n")
    config = load(path, {})
    assert (config.api_workers, config.api_workers_per_tenant) == (16, 4)
    assert config.login_source_rate == 0
    assert config.internal_workers == 4


def test_tenant_lane_settings_are_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(
        "login_workers_per_tenant: 1\nlogin_tenant_rate: 4\nlogin_tenant_burst: 8\n"
        "tenant_queue: 0\nanonymous_source_rate: 0\nanonymous_source_burst: 5\n"
        "tenant_queue_per_source: 3\n"
    )
    config = load(path, {})
    assert config.login_workers_per_tenant == 1
    assert (config.login_tenant_rate, config.login_tenant_burst) == (4, 8)
    assert config.tenant_queue == 0
    assert config.tenant_queue_per_source == 3
    assert (config.anonymous_source_rate, config.anonymous_source_burst) == (0, 5)
    assert load(None, {}).login_tenant_rate == 10.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "/tmp/no-such-jumpgate-token",
            "no token file /tmp/no-such-jumpgate-token: give the token's file or its value "
            "(JUMPGATE_TOKEN=...)",
        ),
        (
            "tokens/join",
            "no token file tokens/join: give the token's file or its value (JUMPGATE_TOKEN=...)",
        ),
    ],
    ids=["absolute", "relative"],
)
def test_a_token_that_looks_like_a_missing_file_says_so(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        join_token(value)
    assert str(refused.value) == message


def test_a_token_is_its_value_or_its_file(tmp_path: Path) -> None:
    assert join_token("abcdefghijklmnopq") == "abcdefghijklmnopq"
    held = tmp_path / "token"
    held.write_text("abcdefghijklmnopq\n")
    assert join_token(str(held)) == "abcdefghijklmnopq"


def test_the_old_names_of_services_and_system_roles_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(
        "roles: [node]\nstatic_tokens: [{tenant: acme, token: abcdefghijklmnopq, roles: [node]}]\n"
    )
    old = load(path, {})
    path.write_text(
        "services: [node]\n"
        "static_tokens: [{tenant: acme, token: abcdefghijklmnopq, system_roles: [node]}]\n"
    )
    new = load(path, {})
    assert old.model_dump() == new.model_dump()
    assert (new.services, new.static_tokens[0].system_roles) == (("node",), ("node",))
    assert new.notes == ()
    assert old.notes == (
        "roles: renamed services (decision 0026); roles is still read, for now",
        "static_tokens: roles renamed system_roles (decision 0026); roles is still read",
    )
    path.write_text("roles: [node]\nservices: [auth]\n")
    with pytest.raises(ConfigError) as both:
        load(path, {})
    assert str(both.value) == "roles: renamed services (decision 0026): give only services"
    path.write_text("roles: [kube]\n")
    with pytest.raises(ConfigError) as old_key:
        load(path, {})
    assert str(old_key.value).startswith("roles: 'kube' is not served")  # the key as written


@pytest.mark.parametrize(
    ("flag", "notes"),
    [
        ("--services", ()),
        ("--roles", ("--roles: renamed --services (decision 0026); still read",)),
    ],
    ids=["new", "old"],
)
def test_the_services_flag_and_its_old_name(
    tmp_path: Path, flag: str, notes: tuple[str, ...]
) -> None:
    args = parser().parse_args(["start", flag, "auth,proxy,node", "--data-dir", str(tmp_path)])
    config = _config(args)
    assert config.services == ("auth", "proxy", "node")
    assert config.notes == notes
