"""Fixtures shared by every test level."""

import os
from collections.abc import Iterator

import pytest

# Offline AWS: moto answers every call; these keep botocore from looking for real credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture
def aws() -> Iterator[None]:
    """In-process moto for every AWS service."""
    from moto import mock_aws

    with mock_aws():
        yield
