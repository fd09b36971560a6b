"""What ``node_agent.asyncssh_adapter`` and ``edge_proxy.asyncssh_adapter`` rely on in
asyncssh beyond its documented API.

Each test names one undocumented part the adapter uses; one failing after an asyncssh upgrade
says which part moved. The behaviour through a real connection (exit-status before EOF and
CLOSE, ``eow@openssh.com`` heard) is in ``tests/net/test_session_channel.py``.
"""

import inspect
from typing import Any

import asyncssh
from asyncssh.misc import map_handler_name

from jumpgate.edge_proxy import asyncssh_adapter as proxy_adapter
from jumpgate.node_agent.asyncssh_adapter import CHECKED_VERSION, END_OF_WRITING


def _names(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_asyncssh_release_is_the_one_the_adapter_was_checked_against() -> None:
    assert asyncssh.__version__ == CHECKED_VERSION, (
        f"asyncssh {asyncssh.__version__} is installed, the node's adapter was checked against"
        f" {CHECKED_VERSION}: re-read the parts listed in node_agent/asyncssh_adapter.py in the"
        " new release, run this file and tests/net/test_session_channel.py, then update"
        " CHECKED_VERSION"
    )


def test_a_channel_sends_a_request_without_closing() -> None:
    assert _names(asyncssh.SSHServerChannel._send_request) == [
        "self",
        "request",
        "args",
        "want_reply",
    ]


def test_channel_requests_are_served_by_methods_named_from_the_request() -> None:
    name = f"_process_{map_handler_name(END_OF_WRITING)}_request"
    assert name == "_process_eow_at_openssh_dot_com_request"
    assert hasattr(asyncssh.SSHServerChannel, "_process_signal_request")  # the same scheme
    assert not hasattr(asyncssh.SSHServerChannel, name)  # asyncssh serves none itself yet


def test_the_line_editor_wrapper_keeps_the_channel_it_wraps() -> None:
    source = inspect.getsource(asyncssh.SSHLineEditorChannel.__init__)
    assert "self._orig_chan = orig_chan" in source


def test_a_forwarded_agent_is_opened_as_a_stream_of_the_server_connection() -> None:
    opener = asyncssh.SSHServerConnection.open_agent_connection
    assert inspect.iscoroutinefunction(opener)
    assert _names(opener) == ["self"]
    assert "create_agent_connection" in inspect.getsource(opener)
    source = inspect.getsource(asyncssh.SSHServerConnection.create_agent_connection)
    assert "_agent_listener" in source  # refused unless asyncssh granted the agent request


def test_env_requests_are_kept_by_a_channel_handler_in_its_env() -> None:
    """``limit_environment`` wraps the handler and counts what it keeps (``_env``, as
    ``get_environment_bytes`` shows it)."""
    handler = asyncssh.SSHServerChannel._process_env_request
    assert _names(handler) == ["self", "packet"]
    assert "self._env[key] = value" in inspect.getsource(handler)
    assert "return MappingProxyType(self._env)" in inspect.getsource(
        asyncssh.SSHServerChannel.get_environment_bytes
    )


def test_the_proxys_adapter_was_checked_against_the_same_release() -> None:
    assert asyncssh.__version__ == proxy_adapter.CHECKED_VERSION, (
        "re-read edge_proxy/asyncssh_adapter.py in the new asyncssh, run this file and"
        " tests/e2e/test_access_at_proxy.py, then update its CHECKED_VERSION"
    )


def test_a_certificates_permissions_are_read_from_the_connections_cert_options() -> None:
    """``permit_the_hop`` widens ``_cert_options``: asyncssh's direct-tcpip check must read
    its permission there (the e2e test of a role without port forwarding shows the rest)."""
    checker = asyncssh.SSHServerConnection.check_certificate_permission
    assert "self._cert_options.get('permit-' + permission" in inspect.getsource(checker)
    opener = asyncssh.SSHServerConnection._process_direct_tcpip_open
    assert "check_certificate_permission('port-forwarding')" in inspect.getsource(opener)


def test_a_shown_certificate_is_checked_by_one_method_of_the_connection() -> None:
    """``on_certificate_checked`` wraps ``_validate_openssh_certificate`` on the connection:
    asyncssh must look it up there for every OpenSSH certificate a client shows, and answer
    ``None`` for one it refuses (its CA, principals, validity or source addresses)."""
    check = asyncssh.SSHServerConnection._validate_openssh_certificate
    assert inspect.iscoroutinefunction(check)
    assert _names(check) == ["self", "username", "cert"]
    source = inspect.getsource(check)
    assert "validate_ca_key(username, cert.signing_key)" in source
    assert "cert.validate(CERT_TYPE_USER, cert_user)" in source
    assert source.count("return None") == 3  # the CA, the principals or validity, the source
    caller = inspect.getsource(asyncssh.SSHServerConnection._validate_client_certificate)
    assert "return await self._validate_openssh_certificate(" in caller
