"""Issue 14, hole 3 (the node's side): a session's ``exec`` and ``session.end`` at the node
were lost when the client was killed, and events waiting for the platform were held in the
agent's memory. They must be written however a session ends, and wait on disk."""

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Site, audit_events
from tests.security.stories import NODE_STORY, Stories, broken, sessions, whole

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def _live(site: Site, marker: str, *, openssh: bool = False) -> subprocess.Popen[bytes]:
    """A ``jump ssh`` (or OpenSSH's ``ssh`` through the proxy) running ``marker``'s command,
    once the node has started it."""
    command = f"echo ready-{marker}; sleep 300"
    client = ["ssh", "-F", str(site.ssh_config)] if openssh else [str(BIN / "jump"), "ssh"]
    process = subprocess.Popen(
        [*client, "web-1", command],
        env=site.admin.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.close()  # the rest is not read; the session goes on printing nothing
    assert line == f"ready-{marker}\n".encode(), line
    return process


def _commands(found: Stories) -> list[str]:
    return sorted(str(e["command"]) for story in found.values() for e in story.get("exec", []))


def test_clients_killed_mid_session_leave_the_whole_story_at_the_node(site: Site) -> None:
    markers = [uuid.uuid4().hex[:12] for _ in range(10)]
    clients = [_live(site, m, openssh=n % 2 == 1) for n, m in enumerate(markers)]
    for client in clients:
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
    at_node = sessions(site, "node", 10)
    assert broken(at_node, "node") == []
    assert len(at_node) == 10
    assert _commands(at_node) == sorted(f"echo ready-{m}; sleep 300" for m in markers)
    at_proxy = sessions(site, "proxy", 10)
    assert broken(at_proxy, "proxy") == []
    assert len(at_proxy) == 10


def test_events_spooled_on_disk_survive_kill_9_of_the_agent(site: Site) -> None:
    marker = uuid.uuid4().hex[:12]
    client = _live(site, marker)
    # The platform goes: the session ends with its tunnel, and the node cannot send its events.
    site.cluster.stop()
    client.wait(timeout=20)
    time.sleep(3)  # the node hangs up on the command and writes the session's end
    site.node.kill(signal.SIGKILL)
    spooled = Path(site.node.directory) / "audit"
    assert spooled.is_dir()
    lanes = [spooled, *(d for d in spooled.iterdir() if d.is_dir())]  # and its lifecycle lane
    assert len(lanes) == 2
    assert all(oct(d.stat().st_mode & 0o777) == oct(0o700) for d in lanes)
    files = [f for d in lanes for f in d.iterdir() if f.is_file()]
    assert files
    assert all(oct(f.stat().st_mode & 0o777) == oct(0o600) for f in files)
    site.cluster.start()
    site.node.restart()
    site.node.wait_tunnel()
    [story] = sessions(site, "node", 1).values()
    assert whole(story, NODE_STORY), sorted(story)
    assert story["exec"][0]["command"] == f"echo ready-{marker}; sleep 300"
    # delivered once taken: nothing is left waiting, and a second restart sends nothing again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        f.suffix == ".jsonl" and f.stat().st_size for f in spooled.rglob("*")
    ):
        time.sleep(0.2)
    site.node.kill(signal.SIGTERM)
    site.node.restart()
    site.node.wait_tunnel()
    time.sleep(2)
    [again] = sessions(site, "node", 1, seconds=1).values()
    assert whole(again, NODE_STORY), sorted(again)  # once each: not delivered twice


def test_agent_sigterm_ends_live_sessions_with_their_events(site: Site) -> None:
    marker = uuid.uuid4().hex[:12]
    client = _live(site, marker)
    started = time.monotonic()
    site.node.kill(signal.SIGTERM)  # waits for the agent to exit
    assert site.node.process is not None
    assert site.node.process.returncode == 0
    assert time.monotonic() - started < 15
    client.wait(timeout=20)
    [story] = sessions(site, "node", 1, seconds=10).values()  # sent before the agent exited
    assert whole(story, NODE_STORY), sorted(story)
    assert [e.get("reason") for e in story["session.end"]] == ["the agent stopped"]
    assert sum(map(len, story.values())) == 3  # a stopping agent sends nothing twice


def test_node_events_carry_a_stable_id(site: Site) -> None:
    """Every node event carries a stable id, so a redelivered batch can be told apart."""
    assert site.ssh("true").returncode == 0
    events = audit_events(site, "exec", 1, where=lambda e: e.get("origin") == "node")
    assert events
    assert all(len(str(e.get("event_id", ""))) == 32 for e in events)


def test_the_exec_event_carries_the_command_up_to_the_field_bound(site: Site) -> None:
    """Second review, finding 14: ``exec`` cut the command at 1,024 characters and did not
    say so; it keeps it whole up to the 2 KiB every event field may take, and says when cut."""
    marker = uuid.uuid4().hex[:12]
    fits = f"echo {marker}-fits " + "y" * 1500
    cut = f"echo {marker}-cut " + "z" * 3000
    for command in (fits, cut):
        answer = site.ssh(command)
        assert answer.returncode == 0, answer.stderr
    deadline = time.monotonic() + 15
    found: dict[str, dict[str, object]] = {}
    while len(found) < 2 and time.monotonic() < deadline:
        for event in audit_events(site, "exec", 2):
            command = str(event.get("command"))
            if event.get("origin") == "node" and marker in command:
                found[command.split()[1]] = event
        time.sleep(0.2)
    assert sorted(found) == [f"{marker}-cut", f"{marker}-fits"], found
    assert found[f"{marker}-fits"]["command"] == fits
    assert not found[f"{marker}-fits"].get("truncated")
    kept = str(found[f"{marker}-cut"]["command"])
    assert cut.startswith(kept)
    assert len(kept) > 2000
    assert found[f"{marker}-cut"].get("truncated") is True
