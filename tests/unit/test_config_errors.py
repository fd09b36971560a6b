"""One configuration system: every section's bad value is one line naming its key path,
durations are parsed once into ``timedelta``, and ``jumpgate start -c`` on something that is
not a config file says so in one line (issue 16 saw tracebacks there)."""

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from jumpgate.cli.daemon.config import ConfigError, load
from jumpgate.cli.daemon.main import main
from jumpgate.cli.daemon.node import agent_config
from jumpgate.node_agent.config import AgentConfig
from jumpgate.protocol.durations import Duration
from jumpgate.protocol.settings import SettingsModel, key_path, one_line
from jumpgate.protocol.ssh_algorithms import MAC_ALGOS


def _refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load(path, {})
    message = str(raised.value)
    assert "\n" not in message
    assert "validation error" not in message  # pydantic's own report never reaches people
    return message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("storage: {path: [1]}\n", "storage.path: must be text, not [1]"),
        ("storage: {type: [sqlite]}\n", "storage.type: ['sqlite'] is not sqlite or dynamodb"),
        ("control_plane: {function_prefix: {a: b}}\n", "control_plane.function_prefix: must be"),
        ("control_plane: {functions: {auth: [x]}}\n", "control_plane.functions: must be a mapping"),
        (
            "connection_limits: {body_timeout: [1]}\n",
            "connection_limits.body_timeout: must be text",
        ),
        ("connection_limits: [1]\n", "connection_limits: must be a mapping of max_connections_"),
        (
            "connection_limits: {max_sessions_per_connection: 'x'}\n",
            "connection_limits.max_sessions_per_connection: 'x' must be a whole number, 1 or more",
        ),
        (
            "static_tokens: [{tenant: acme, token: [abcdefghijklmnopq]}]\n",
            "static_tokens[0].token: must be text, not ['abcdefghijklmnopq']",
        ),
        ("static_tokens: [{token: abcdefghijklmnopq}]\n", "static_tokens[0].tenant: is required"),
        (
            "static_tokens: [acme]\n",
            "static_tokens[0]: must be a mapping of tenant, token, system_roles",
        ),
        (
            "static_tokens: [{tenant: acme, token: abcdefghijklmnopq, role: node}]\n",
            "static_tokens[0]: unknown key(s) role; use tenant, token, system_roles",
        ),
        (
            "static_tokens: {tenant: acme}\n",
            "static_tokens: must be a list, not {'tenant': 'acme'}",
        ),
        ("log_level: loud\n", "log_level: 'loud' is not debug, info, warning or error"),
        ("roles: 5\n", "roles: must be a list of auth, proxy, node (or text: auth,proxy), not 5"),
        ("roles: []\n", "roles: name at least one of auth,proxy,node"),
        ("public_addr: 'bad host!'\n", "public_addr: 'bad host!' must be a host name, no port"),
        ("api_nice: 20\n", "api_nice: 20 must be a whole number from 0 to 19"),
        ("api_workers: true\n", "api_workers: True must be a whole number from 1 to 256"),
        ("login_user_rate: fast\n", "login_user_rate: 'fast' must be a number, 0 or more"),
        ("recording_grace: 30s\n", "recording_grace: must be at least 1m"),
        ("drain_timeout: [1]\n", "drain_timeout: must be text, not [1]"),
        ("data_dir: [1]\n", "data_dir: must be a path, not [1]"),
        ("bogus: 1\nother: 2\n", "unknown config key(s): bogus, other"),
        (
            "ssh_listen_addr: 127.0.0.1\n",
            "ssh_listen_addr: '127.0.0.1' has no port: use HOST:PORT (port 0: any free port)",
        ),
    ],
    ids=[
        "storage-text",
        "storage-choice",
        "control-plane-text",
        "control-plane-mapping",
        "limits-duration",
        "limits-not-mapping",
        "limits-count",
        "token-text",
        "token-missing-key",
        "token-not-mapping",
        "token-unknown-key",
        "tokens-not-list",
        "log-level",
        "roles-number",
        "roles-empty",
        "public-addr-host",
        "nice-bound",
        "bool-for-count",
        "rate-text",
        "grace-bound",
        "duration-list",
        "path",
        "unknown-keys-together",
        "listen-without-port",
    ],
)
def test_every_section_names_the_bad_key_in_one_line(tmp_path: Path, text: str, line: str) -> None:
    assert _refused(tmp_path, text).startswith(line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("12h", timedelta(hours=12)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2H", timedelta(hours=2)),
    ],
    ids=["seconds", "minutes", "hours", "compound", "days", "upper-case"],
)
def test_durations_are_parsed_once_into_timedelta(
    tmp_path: Path, text: str, expected: timedelta
) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(f"node_gone_after: {text}\nconnection_limits: {{idle_timeout: {text}}}\n")
    config = load(path, {})
    assert config.node_gone_after == expected
    assert config.connection_limits.idle_timeout == expected
    assert config.connection_limits.limits().idle_timeout == expected.total_seconds()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("'90'", "invalid duration '90'"),
        ("90", "invalid duration '90'"),
        ("1y", "invalid duration '1y'"),
        ("'5 m'", "invalid duration '5 m'"),
        ("'-5m'", "invalid duration '-5m'"),
        ("5m3", "invalid duration '5m3'"),
        ("true", "must be text, not True"),
        ("{a: 1}", "must be text, not {'a': 1}"),
    ],
    ids=["text-no-unit", "number", "unknown-unit", "space", "negative", "trailing", "bool", "map"],
)
def test_durations_refuse_other_forms(tmp_path: Path, text: str, shown: str) -> None:
    assert _refused(tmp_path, f"node_gone_after: {text}\n") == f"node_gone_after: {shown}" + (
        ": use a number and a unit, e.g. 30s, 5m, 12h" if "invalid" in shown else ""
    )


def test_the_formatter_names_nested_keys_of_any_settings_model() -> None:
    class Inner(SettingsModel):
        wait: Duration = timedelta(seconds=1)

    class Outer(SettingsModel):
        inner: tuple[Inner, ...] = ()

    with pytest.raises(ValidationError) as raised:
        Outer.model_validate({"inner": [{}, {"wait": "soon"}]})
    assert one_line(raised.value, Outer).startswith("inner[1].wait: invalid duration 'soon'")
    with pytest.raises(ValidationError) as raised:
        Outer.model_validate({"inner": [{"wiat": "1s", "wail": "2s"}]})
    assert one_line(raised.value, Outer) == "inner[0]: unknown key(s) wail, wiat; use wait"
    assert key_path(("a", 0, "b", 2)) == "a[0].b[2]"


def _start_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["start", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err.strip()


def test_start_on_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _start_error(capsys, "-c", str(tmp_path))
    assert line == (
        f"jumpgate: error: config file {tmp_path} is a directory: give the path of jumpgate.yaml"
    )


@pytest.mark.parametrize(
    "content",
    [b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00", b"public_addr: x\x00\x01\n"],
    ids=["not-utf8", "nul-bytes"],
)
def test_start_on_a_binary_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    binary = tmp_path / "jumpgate"
    binary.write_bytes(content)
    line = _start_error(capsys, "-c", str(binary))
    assert line.startswith(f"jumpgate: error: config file {binary} is not text")


def test_start_with_roles_a_number_says_what_roles_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text("roles: 5\n")
    line = _start_error(capsys, "-c", str(path))
    assert line == (
        "jumpgate: error: roles: must be a list of auth, proxy, node (or text: auth,proxy), not 5"
    )


def test_start_with_a_bad_flag_value_names_the_flag_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _start_error(capsys, "--data-dir", str(tmp_path), "--node-gone-after", "soon")
    assert line.startswith("jumpgate: error: node_gone_after: invalid duration 'soon'")


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"nodename": "bad name!"}, "nodename: node name 'bad name!' is not a valid hostname"),
        ({"labels": "env"}, "labels: label 'env' is not KEY=VALUE"),
    ],
    ids=["nodename", "label"],
)
def test_the_agent_refuses_what_it_cannot_use_in_one_line(
    tmp_path: Path, changes: dict[str, str], line: str
) -> None:
    config = load(None, {"data_dir": str(tmp_path), "roles": "node", **changes})
    with pytest.raises(ConfigError) as raised:
        agent_config(config)
    assert str(raised.value).startswith(line)


def test_the_agent_config_is_checked_however_it_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        AgentConfig(data_dir=tmp_path, ca_pin="md5:abc")
    assert one_line(raised.value, AgentConfig) == (
        "ca_pin: 'md5:abc' is not sha256:<hex> (see jumpctl status)"
    )
    with pytest.raises(ValidationError) as raised:
        AgentConfig.model_validate({"data_dir": tmp_path, "insecure": "yes"})
    assert one_line(raised.value, AgentConfig) == "insecure: must be true or false, not 'yes'"
    made = AgentConfig(data_dir=tmp_path, auth_server="acme.localhost:3080", nodename="web-1")
    assert (made.auth_server, made.nodename, made.labels) == ("acme.localhost:3080", "web-1", {})


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "ciphers: [aes128-ctr, 3des-cbcx]\n",
            "ciphers: '3des-cbcx' is not a cipher this release offers; use: chacha20-poly1305@",
        ),
        (
            "kex_algos: [curve25519-sha255]\n",
            "kex_algos: 'curve25519-sha255' is not a key exchange this release offers; use: ",
        ),
        ("mac_algos: hmac-md6\n", "mac_algos: 'hmac-md6' is not a MAC this release offers; use: "),
        ("mac_algos: {a: b}\n", "mac_algos: must be a list of algorithm names, not {'a': 'b'}"),
    ],
    ids=["cipher", "kex", "mac-as-text", "not-a-list"],
)
def test_a_bad_algorithm_is_named_with_the_valid_ones(tmp_path: Path, text: str, line: str) -> None:
    message = _refused(tmp_path, text)
    assert message.startswith(line), message
    if "use:" in message:
        assert (
            "hmac-sha2-256" in message or "curve25519-sha256" in message or "aes128-ctr" in message
        )


def test_configured_algorithms_reach_the_proxy_and_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text("ciphers: aes256-ctr, aes128-gcm@openssh.com\nkex_algos: [curve25519-sha256]\n")
    config = load(path, {"data_dir": str(tmp_path), "roles": "node"})
    proxy = config.algorithms()
    assert proxy.ciphers == ("aes256-ctr", "aes128-gcm@openssh.com")
    assert proxy.kex == ("curve25519-sha256",)
    assert proxy.macs == MAC_ALGOS  # not given: the defaults
    assert "hmac-sha1" not in proxy.macs
    assert agent_config(config).algorithms() == proxy
    client = proxy.client(prefer=("aes128-gcm@openssh.com",))
    assert client["encryption_algs"] == ["aes128-gcm@openssh.com", "aes256-ctr"]
    with pytest.raises(ValidationError) as raised:
        AgentConfig.model_validate({"data_dir": tmp_path, "kex_algos": ["nope"]})
    assert one_line(raised.value, AgentConfig).startswith(
        "kex_algos: 'nope' is not a key exchange this release offers"
    )


@pytest.mark.parametrize(
    "text",
    [
        "ciphers: [aes128-ctr, arcfour]\n",
        "ciphers: 3des-cbc\n",
        "kex_algos: [diffie-hellman-group1-sha1]\n",
        "kex_algos: diffie-hellman-group-exchange-sha1\n",
        "kex_algos: ecdh-sha2-nistp256\n",
        "mac_algos: [hmac-sha1]\n",
        "mac_algos: hmac-md5-etm@openssh.com\n",
    ],
    ids=["arcfour", "3des", "group1", "gex-sha1", "nist-kex", "hmac-sha1", "md5"],
)
def test_a_broken_algorithm_is_refused_even_though_asyncssh_has_it(
    tmp_path: Path, text: str
) -> None:
    """The config may choose among safe algorithms, never bring back one ssh-audit fails
    (a newcomer's ``ciphers: [arcfour, 3des-cbc]`` started and served them)."""
    message = _refused(tmp_path, text)
    assert " is broken " in message, message
    assert "arcfour" not in message.split("use:")[-1], message  # the offered list is safe


def test_an_unknown_top_level_key_suggests_the_key_meant(tmp_path: Path) -> None:
    message = _refused(tmp_path, "web_listen_adr: 127.0.0.1:3080\n")
    assert message.startswith("unknown config key(s): web_listen_adr"), message
    assert "did you mean web_listen_addr?" in message, message
