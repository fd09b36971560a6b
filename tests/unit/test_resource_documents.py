"""A role or lock document that is wrong is refused with one line naming the field (its key
path as the admin wrote it) and what to write instead: what ``jumpctl create -f`` prints and
the API answers as its 400 detail."""

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from jumpgate.protocol.invalid import first_line
from jumpgate.protocol.resources import Lock, Role


def _role(spec: dict[str, Any], name: str = "ops") -> dict[str, Any]:
    return {"kind": "role", "version": "v1", "metadata": {"name": name}, "spec": spec}


def _lock(target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"kind": "lock", "metadata": {"name": "l1"}, "spec": {"target": target, **spec}}


# (document model, document, the line's key path, words the line must hold)
REFUSED: dict[str, tuple[type[BaseModel], dict[str, Any], str, str]] = {
    "invalid regex": (
        Role,
        _role({"allow": {"node_labels": {"env": "^(prod$"}}}),
        "spec.allow.node_labels.env",
        "not a valid regular expression",
    ),
    "invalid regex in a list": (
        Role,
        _role({"deny": {"node_labels": {"team": ["db", "^[a-$"]}}}),
        "spec.deny.node_labels.team",
        "not a valid regular expression",
    ),
    # Python's expressions backtrack: these would hold a shared worker for minutes on a
    # label value of 30 characters (Teleport's RE2 would not), so they are refused.
    "regex nested repetition": (
        Role,
        _role({"allow": {"node_labels": {"env": "^(a+)+$"}}}),
        "spec.allow.node_labels.env",
        "may take too long to match",
    ),
    "regex repeated alternation": (
        Role,
        _role({"deny": {"node_labels": {"env": ["prod", "^(a|aa)*b$"]}}}),
        "spec.deny.node_labels.env",
        "may take too long to match",
    ),
    "regex back-reference": (
        Role,
        _role({"allow": {"node_labels": {"env": "^(a)\\1$"}}}),
        "spec.allow.node_labels.env",
        "may take too long to match",
    ),
    "regex four repetitions": (
        Role,
        _role({"allow": {"node_labels": {"env": "^\\w*\\w*\\w*\\w*x$"}}}),
        "spec.allow.node_labels.env",
        "at most 3",
    ),
    "label value a number": (
        Role,
        _role({"allow": {"node_labels": {"env": 5}}}),
        "spec.allow.node_labels.env",
        "must be text or a list of text",
    ),
    "label list with a number": (
        Role,
        _role({"allow": {"node_labels": {"env": ["prod", 5]}}}),
        "spec.allow.node_labels.env",
        "must be text or a list of text",
    ),
    "label value empty list": (
        Role,
        _role({"allow": {"node_labels": {"env": []}}}),
        "spec.allow.node_labels.env",
        "must be text or a list of text",
    ),
    "unknown field in allow": (
        Role,
        _role({"allow": {"login": ["ubuntu"]}}),
        "spec.allow.login",
        "unknown field",
    ),
    "unknown field at the top": (
        Role,
        {"metadata": {"name": "ops"}, "spek": {}},
        "spek",
        "unknown field",
    ),
    "unknown option": (
        Role,
        _role({"options": {"max_ttl": "1h"}}),
        "spec.options.max_ttl",
        "unknown field",
    ),
    "max_session_ttl over 30h": (
        Role,
        _role({"options": {"max_session_ttl": "31h"}}),
        "spec.options.max_session_ttl",
        "longer than 30h",
    ),
    "max_session_ttl not a duration": (
        Role,
        _role({"options": {"max_session_ttl": "forever"}}),
        "spec.options.max_session_ttl",
        "invalid duration 'forever'",
    ),
    "client_idle_timeout not a duration": (
        Role,
        _role({"options": {"client_idle_timeout": "-1"}}),
        "spec.options.client_idle_timeout",
        "invalid duration '-1'",
    ),
    "login with a space": (
        Role,
        _role({"allow": {"logins": ["Root User"]}}),
        "spec.allow.logins[0]",
        "not an OS user name or a trait",
    ),
    "trait not closed": (
        Role,
        _role({"allow": {"logins": ["ubuntu", "{{internal.logins"]}}),
        "spec.allow.logins[1]",
        "not an OS user name or a trait",
    ),
    "trait not internal": (
        Role,
        _role({"deny": {"logins": ["{{external.logins}}"]}}),
        "spec.deny.logins[0]",
        "not an OS user name or a trait",
    ),
    "rule over an unknown kind": (
        Role,
        _role({"allow": {"rules": [{"resources": ["nodes"], "verbs": ["list"]}]}}),
        "spec.allow.rules[0].resources[0]",
        "'nodes'",
    ),
    "role name with capitals": (
        Role,
        _role({}, name="Ops!"),
        "metadata.name",
        "is not a valid name",
    ),
    "lock without target": (
        Lock,
        _lock({}),
        "spec.target",
        "a lock needs a target",
    ),
    "lock target unknown field": (
        Lock,
        _lock({"usr": "alice"}),
        "spec.target.usr",
        "unknown field",
    ),
    "lock message too long": (
        Lock,
        _lock({"user": "alice"}, message="x" * 201),
        "spec.message",
        "at most 200 characters",
    ),
}


@pytest.mark.parametrize(
    ("model", "document", "where", "words"), list(REFUSED.values()), ids=list(REFUSED)
)
def test_refusal_is_one_line_naming_the_field(
    model: type[BaseModel], document: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(document)
    said = first_line(raised.value)
    assert "\n" not in said
    assert said.startswith(f"{where}: "), said
    assert words in said, said
    for internal in ("function-after", "str-enum", "literal[", "Value error"):
        assert internal not in said, said


ACCEPTED = {
    "every matcher form": _role(
        {
            "allow": {
                "logins": ["{{internal.logins}}", "{{ internal.logins }}", "ubuntu"],
                "node_labels": {"*": "*", "env": ["prod", "stag*"], "team": "^db-[a-z]+$"},
                "rules": [{"resources": ["*"], "verbs": ["list", "read"]}],
            },
            "deny": {"logins": ["root"], "node_labels": {"secret": "yes"}},
        }
    ),
    "regexes people write": _role(
        {
            "allow": {
                "node_labels": {
                    "team": "^(web|db)-[0-9]+$",
                    "host": "^[a-z]{2,8}-[0-9]{1,3}\\.example\\.com$",
                    "env": "^.*-.*-.*$",
                    "os": "^(ubuntu|debian)?$",
                }
            }
        }
    ),
    "max_session_ttl exactly 30h": _role({"options": {"max_session_ttl": "30h"}}),
    "client_idle_timeout off": _role({"options": {"client_idle_timeout": "0s"}}),
    "options only": _role({"options": {"port_forwarding": False, "forward_agent": True}}),
}


@pytest.mark.parametrize("document", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_valid_roles_round_trip(document: dict[str, Any]) -> None:
    role = Role.model_validate(document)
    assert Role.model_validate_json(role.model_dump_json()) == role


def test_lock_needs_only_one_target_field() -> None:
    for field in ("user", "user_id", "role", "node", "login"):
        lock = Lock.model_validate(_lock({field: "x"}))
        assert getattr(lock.spec.target, field) == "x"
