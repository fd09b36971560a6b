"""The proxy's HTTPS certificate from the environment (as ECS injects it): both or neither,
and a certificate that does not load is one line naming where it came from."""

from pathlib import Path

import pytest

from jumpgate.edge_proxy import tls


def test_the_environments_certificate_is_used_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls.ensure_certificate(tmp_path / "made", "example.sh")
    monkeypatch.setenv(tls.CERT_VARIABLE, cert.read_text())
    monkeypatch.setenv(tls.KEY_VARIABLE, key.read_text())
    paths = tls.from_environment(tmp_path / "tls")
    assert paths is not None
    assert paths[0].read_text() == cert.read_text()
    assert paths[1].stat().st_mode & 0o777 == 0o600
    tls.proxy_context(tmp_path, "example.sh")  # loads


def test_half_or_bad_environment_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls.from_environment(tmp_path) is None
    monkeypatch.setenv(tls.CERT_VARIABLE, "-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="set both JUMPGATE_TLS_CERT and JUMPGATE_TLS_KEY"):
        tls.proxy_context(tmp_path, "example.sh")
    monkeypatch.setenv(tls.KEY_VARIABLE, "not a key")
    with pytest.raises(ValueError, match="are not a certificate and its key in PEM"):
        tls.proxy_context(tmp_path, "example.sh")
