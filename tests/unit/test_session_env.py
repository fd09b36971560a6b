"""``session_env``: which client variables a node accepts, the order in which sshd's
environment is built (what may override what), where a connection comes from, and the
settings that configure it (``accept_env``, ``pam``) refused in one line when wrong."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jumpgate.cli.daemon.config import Config
from jumpgate.cli.daemon.node import agent_config
from jumpgate.node_agent import session_env
from jumpgate.node_agent.config import AgentConfig
from jumpgate.node_agent.sessions import Account
from jumpgate.protocol.settings import one_line


@pytest.mark.parametrize(
    ("requested", "patterns", "kept"),
    [
        ({"LANG": "C", "LC_ALL": "C", "LD_PRELOAD": "x"}, ("LANG", "LC_*"), ["LANG", "LC_ALL"]),
        ({"lang": "C", "LANGUAGE": "fr"}, ("LANG",), []),
        ({"TZ": "UTC", "TERMINFO": "x"}, ("T?",), ["TZ"]),
        ({"LANG": "C"}, (), []),
        ({"LANG": "bad\0value", "LC_ALL": "C"}, ("*",), ["LC_ALL"]),
    ],
    ids=["default", "case-sensitive-and-whole-name", "question-mark", "none", "nul-refused"],
)
def test_the_client_variables_a_pattern_names_are_kept(
    requested: dict[str, str], patterns: tuple[str, ...], kept: list[str]
) -> None:
    assert list(session_env.accepted(requested, patterns)) == kept


def test_at_most_128_client_variables_are_kept_as_sshd() -> None:
    requested = {f"LC_{i}": "x" for i in range(300)}
    assert len(session_env.accepted(requested, ("LC_*",))) == session_env.MAX_CLIENT_VARIABLES


ALICE = Account("alice", 1000, 1000, "/home/alice", "/bin/bash")


def _built(**kw: Any) -> dict[str, str]:
    return session_env.build(ALICE, **kw)


def test_a_client_cannot_set_the_logins_own_variables() -> None:
    client = {"USER": "root", "HOME": "/root", "PATH": "/tmp", "SHELL": "/bin/x", "LANG": "fr"}
    env = _built(context=session_env.SessionContext(client))
    assert env["USER"] == env["LOGNAME"] == "alice"
    assert (env["HOME"], env["SHELL"]) == ("/home/alice", "/bin/bash")
    assert env["PATH"] == session_env.USER_PATH
    assert env["LANG"] == "fr"  # the client's locale goes over the agent's


def test_pam_variables_go_over_the_logins_but_never_forge_the_connection() -> None:
    where = session_env.Origin("192.0.2.7", 51000, "10.0.0.1", 22)
    pam_env = {"LANG": "de_DE.UTF-8", "SSH_CONNECTION": "1.1.1.1 1 1.1.1.1 1", "MAIL": "/x"}
    env = _built(
        context=session_env.SessionContext({}, where, pam=True), pam_env=pam_env, tty="/dev/pts/4"
    )
    assert env["SSH_CONNECTION"] == "192.0.2.7 51000 10.0.0.1 22"
    assert env["SSH_CLIENT"] == "192.0.2.7 51000 22"
    assert env["SSH_TTY"] == "/dev/pts/4"
    assert (env["LANG"], env["MAIL"]) == ("de_DE.UTF-8", "/x")


def test_mail_is_sshds_without_pam_and_pams_with_it() -> None:
    assert _built()["MAIL"] == "/var/mail/alice"
    assert "MAIL" not in _built(context=session_env.SessionContext({}, pam=True))


def test_root_gets_the_superusers_path() -> None:
    env = session_env.build(Account("root", 0, 0, "/root", "/bin/sh"))
    assert env["PATH"] == session_env.SUPERUSER_PATH
    assert "TERM" not in env
    assert "SSH_TTY" not in env


class _Conn:
    def __init__(self, **extra: object) -> None:
        self.extra = extra

    def get_extra_info(self, name: str) -> object:
        return self.extra.get(name)


@pytest.mark.parametrize(
    ("conn", "origin"),
    [
        (
            _Conn(peername=("127.0.0.1", 40000), sockname=("127.0.0.1", 3022)),
            session_env.Origin("127.0.0.1", 40000, "127.0.0.1", 3022),
        ),
        (
            _Conn(peername=("::1", 40000, 0, 0), sockname=("::1", 22, 0, 0)),
            session_env.Origin("::1", 40000, "::1", 22),
        ),
        (_Conn(peername=("", 0), sockname=None), session_env.UNKNOWN),
    ],
    ids=["ipv4", "ipv6", "not-a-socket"],
)
def test_the_origin_of_a_connection(conn: _Conn, origin: session_env.Origin) -> None:
    assert session_env.origin(conn) == origin


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"accept_env": ["LANG", "LC_*=x"]}, "accept_env: 'LC_*=x' is not a variable"),
        ({"accept_env": 5}, "accept_env: must be a list of variable name patterns"),
        ({"pam": {"service_name": "../shadow"}}, "pam.service_name: '../shadow'"),
        ({"pam": {"enabled": "yes"}}, "pam.enabled"),
        ({"pam": {"enable": True}}, "pam: unknown key(s) enable"),
    ],
    ids=["pattern-with-equals", "not-a-list", "service-path", "enabled-not-bool", "misspelt"],
)
def test_bad_session_settings_are_refused_in_one_line(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        AgentConfig.model_validate({"data_dir": tmp_path, **fields})
    said = one_line(refused.value, AgentConfig)
    assert "\n" not in said
    assert message in said, said


def test_the_daemons_config_gives_the_agent_its_session_settings(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "data_dir": tmp_path,
            "services": ["node"],
            "accept_env": "LANG LC_* TZ",
            "pam": {"enabled": True, "service_name": "jumpgate"},
        }
    )
    agent = agent_config(config)
    assert agent.accept_env == ("LANG", "LC_*", "TZ")
    assert (agent.pam.enabled, agent.pam.service_name) == (True, "jumpgate")
    default = AgentConfig(data_dir=tmp_path)
    assert default.accept_env == ("LANG", "LC_*")
    assert (default.pam.enabled, default.pam.service_name) == (False, "sshd")


def test_the_agents_own_locale_is_not_the_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """sshd sets no LANG of its own (the client's SendEnv, or PAM's /etc/default/locale,
    give one): the agent's own LANG must not leak into sessions (sshd parity)."""
    monkeypatch.setenv("LANG", "xx_AGENT.UTF-8")
    assert "LANG" not in _built()
    assert _built(context=session_env.SessionContext({"LANG": "fr"}))["LANG"] == "fr"
