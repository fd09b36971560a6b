"""A body the API's models refuse is said in words: what is wrong and what to write instead,
never pydantic's own phrasing (``String should match pattern '^[0-9]{6}$'``). The CLIs
print these lines (``protocol.client.invalid_detail``) and the platform answers them as a
400's detail, so one formatter serves both."""

import inspect
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from jumpgate.protocol import invalid, models
from jumpgate.protocol.client import invalid_detail

# What pydantic says in its own words: none of it should reach a person.
PYDANTIC_PHRASES = (
    "Input should",
    "String should",
    "List should",
    "Dictionary should",
    "should have at",
    "Value error",
    "Field required",
    "Extra inputs",
    "Assertion failed",
    "Input is",
    "pattern",
    "Invalid JSON",
)


def _refusal(model: type[BaseModel], **fields: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(fields)
    return invalid_detail(raised.value)


KEY = "ssh-ed25519 " + "A" * 68


@pytest.mark.parametrize(
    ("model", "fields", "line"),
    [
        (
            models.LoginRequest,
            {"user": "alice", "password": "p", "otp": "1", "public_key": KEY},
            "otp: must be the 6 digits your authenticator app shows, not '1'",
        ),
        (
            models.TokenCreateRequest,
            {"ttl_seconds": 1000 * 86400},
            "ttl_seconds: must be from 1m to 30d, not 1000d",
        ),
        (
            models.TokenCreateRequest,
            {"ttl_seconds": 30},
            "ttl_seconds: must be from 1m to 30d, not 30s",
        ),
        (
            models.TokenCreateRequest,
            {"token": "short"},
            "token: must be 16 to 256 letters, digits, '-' or '_' (5 given)",
        ),
        (
            models.SignupRequest,
            {"token": "x" * 20, "password": "too short"},
            "password: must be 12 to 128 characters (9 given)",
        ),
        (
            models.UserCreateRequest,
            {"name": "bob", "roles": ["Bogus Role"]},
            # any well-formed name may be a role now; the platform says if it exists
            "roles[0]: 'Bogus Role' is not a valid name: use lowercase letters, digits and "
            ". _ @ + -, at most 63",
        ),
        (
            models.UserCreateRequest,
            {"name": "bob", "roles": []},
            "roles: must list at least 1 (none given)",
        ),
        (
            models.UserLockRequest,
            {"message": "x" * 201},
            "message: must be at most 200 characters (201 given)",
        ),
        (
            models.UserLockRequest,
            {"until": "never"},
            "until: unknown field: see the API's /v1/openapi.json",
        ),
        (models.SignupRequest, {"password": "p" * 12}, "token: is required"),
    ],
    ids=[
        "otp",
        "ttl-too-long",
        "ttl-too-short",
        "token-too-short",
        "password-too-short",
        "role-malformed",
        "roles-empty",
        "message-too-long",
        "unknown-field",
        "missing",
    ],
)
def test_a_refused_field_is_said_in_words(
    model: type[BaseModel], fields: dict[str, Any], line: str
) -> None:
    assert _refusal(model, **fields) == line


def _bodies() -> list[type[BaseModel]]:
    return [
        value
        for _, value in inspect.getmembers(models, inspect.isclass)
        if issubclass(value, models._Model) and value is not models._Model
    ]


def _wrong_values(schema: dict[str, Any]) -> list[Any]:
    """Values a field whose JSON schema is ``schema`` refuses: each of its constraints broken,
    and a value of the wrong kind."""
    options = schema.get("anyOf", [schema])
    wrong: list[Any] = [object()]
    for option in options:
        if "pattern" in option:
            wrong.append("!")
        if "minLength" in option:
            wrong.append("")
        if "maxLength" in option:
            wrong.append("x" * (option["maxLength"] + 1))
        if "minimum" in option:
            wrong.append(option["minimum"] - 1)
        if "maximum" in option:
            wrong.append(option["maximum"] + 1)
        if "minItems" in option:
            wrong.append([])
        if option.get("type") == "array":
            wrong.append(["x" * 9000])
    return wrong


@pytest.mark.parametrize("model", _bodies(), ids=lambda m: m.__name__)
def test_every_field_of_every_body_is_refused_in_words(model: type[BaseModel]) -> None:
    """Whatever field a caller gets wrong, and however: no line in pydantic's words."""
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    for name, field in schema["properties"].items():
        if "$ref" in field:
            field = definitions[field["$ref"].rsplit("/", 1)[-1]]
        for wrong in _wrong_values(field):
            try:
                model.model_validate({name: wrong})
            except ValidationError as exc:
                errors = exc.errors()
                refused = [e for e in errors if e["loc"][:1] == (name,)] or errors
                line = invalid.line(refused[0])
                said = [p for p in PYDANTIC_PHRASES if p in line]
                assert not said, f"{model.__name__}.{name} = {wrong!r}: {line}"
                assert "\n" not in line
