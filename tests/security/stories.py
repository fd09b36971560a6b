"""What the audit log tells of a session, as the proxy and the node each saw it."""

import time
from typing import Any

from tests.e2e.conftest import Site

Stories = dict[str, dict[str, list[dict[str, Any]]]]
"""Events by session id, then by type."""

NODE_STORY = ("session.start", "exec", "session.end")
PROXY_STORY = ("session.start", "session.end")


def whole(story: dict[str, list[dict[str, Any]]], kinds: tuple[str, ...]) -> bool:
    """One of each kind; delivery is at least once, so copies with one ``event_id`` are one."""
    return all(
        len({e.get("event_id") or e["id"] for e in story.get(kind, [])}) == 1 for kind in kinds
    )


def sessions(site: Site, origin: str, count: int, seconds: float = 30) -> Stories:
    """The events ``origin`` (``proxy`` or ``node``) wrote, by session, once ``count`` sessions
    have their whole story or ``seconds`` have passed."""
    kinds = NODE_STORY if origin == "node" else PROXY_STORY
    deadline = time.monotonic() + seconds
    search = ["jumpctl", "audit", "search", "--order", "asc", "--limit", "1000"]
    while True:
        found: Stories = {}
        for e in site.admin.ok(*search, "--format", "json").json():
            if e.get("origin") == origin and e.get("session_id"):
                found.setdefault(e["session_id"], {}).setdefault(e["type"], []).append(e)
        done = sum(whole(story, kinds) for story in found.values())
        if done >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def broken(found: Stories, origin: str) -> list[list[str]]:
    """The sessions whose story misses a part (the kinds they have), for an assertion."""
    kinds = NODE_STORY if origin == "node" else PROXY_STORY
    return [sorted(story) for story in found.values() if not whole(story, kinds)]
