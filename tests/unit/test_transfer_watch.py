"""The transfer watchers on byte streams (issue 14, transfers): every write the node relays is
reported, whatever the names hold, however the stream ends, and a stream the watcher cannot
follow is reported and stopped, never let through unwatched."""

import struct
from typing import Any

import pytest

from jumpgate.node_agent.scp_watch import ScpWatch
from jumpgate.node_agent.sftp_watch import SftpWatch

Events = list[tuple[str, dict[str, Any]]]


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _packet(kind: int, request: int | None, *parts: bytes) -> bytes:
    body = (
        bytes([kind]) + (b"" if request is None else struct.pack(">I", request)) + b"".join(parts)
    )
    return struct.pack(">I", len(body)) + body


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


OK = _u32(0) + _string(b"") + _string(b"")
READ, WRITE, APPEND, CREAT, TRUNC = 0x01, 0x02, 0x04, 0x08, 0x10


class _Sftp:
    """A watched SFTP conversation: requests and the replies sftp-server would give."""

    def __init__(self) -> None:
        self.events: Events = []
        self.stopped = 0
        self.watch = SftpWatch(lambda outcome, fields: self.events.append((outcome, fields)))
        self.watch.stop = self._stop

    def _stop(self) -> None:
        self.stopped += 1

    def open(self, request: int, path: bytes, flags: int, handle: bytes) -> None:
        self.watch.from_user(_packet(3, request, _string(path), _u32(flags), _u32(0)))
        self.watch.from_node(_packet(102, request, _string(handle)))

    def write(self, request: int, handle: bytes, data: bytes) -> None:
        self.watch.from_user(_packet(6, request, _string(handle), _u64(0), _string(data)))
        self.watch.from_node(_packet(101, request, OK))

    def ask(self, kind: int, request: int, *parts: bytes, status: int = 0) -> None:
        self.watch.from_user(_packet(kind, request, *parts))
        self.watch.from_node(_packet(101, request, _u32(status), _string(b"x"), _string(b"")))

    def close(self, request: int, handle: bytes) -> None:
        self.ask(4, request, _string(handle))


def _ext(name: bytes, *parts: bytes) -> tuple[bytes, ...]:
    return (_string(name), *parts)


def _write_then(step: str, sftp: _Sftp) -> None:
    """A write to /etc/cron.d/x after ``step`` has tried to throw the watcher off."""
    if step == "bad-utf8-mkdir":
        sftp.ask(14, 1, _string(b"/tmp/\xff\xfe"), _u32(0), status=4)
    elif step == "bad-utf8-open":
        sftp.open(1, b"/tmp/\xff", READ, b"h0")
    sftp.open(2, b"/etc/cron.d/x", WRITE | CREAT | TRUNC, b"h1")
    sftp.write(3, b"h1", b"* * * * * root sh\n")
    sftp.close(4, b"h1")


@pytest.mark.parametrize("step", ["plain", "bad-utf8-mkdir", "bad-utf8-open"])
def test_sftp_write_is_reported_after_undecodable_names(step: str) -> None:
    sftp = _Sftp()
    _write_then(step, sftp)
    writes = [fields for _, fields in sftp.events if fields.get("path") == "/etc/cron.d/x"]
    assert writes == [{"action": "write", "path": "/etc/cron.d/x", "length": 18}]
    assert sftp.stopped == 0


def test_sftp_undecodable_names_are_reported_escaped() -> None:
    sftp = _Sftp()
    sftp.ask(14, 1, _string(b"/tmp/\xff\xfe"), _u32(0), status=4)
    [(outcome, fields)] = sftp.events
    assert outcome == "W"
    assert (fields["action"], fields["path"]) == ("mkdir", "/tmp/\\xff\\xfe")


@pytest.mark.parametrize(
    ("flags", "action"),
    [
        (READ, "read"),
        (WRITE, "write"),
        (CREAT, "write"),
        (TRUNC, "write"),
        (APPEND, "write"),
        (READ | CREAT | TRUNC, "write"),
    ],
    ids=["read", "write", "creat", "trunc", "append", "read-creat-trunc"],
)
def test_sftp_open_flags_that_change_a_file_make_a_write(flags: int, action: str) -> None:
    sftp = _Sftp()
    sftp.open(1, b"/etc/f", flags, b"h")
    sftp.close(2, b"h")
    assert sftp.events == [("I", {"action": action, "path": "/etc/f", "length": 0})]


def test_sftp_handles_never_closed_are_reported_at_the_end() -> None:
    sftp = _Sftp()
    sftp.open(1, b"/etc/cron.d/x", WRITE | CREAT, b"h1")
    sftp.write(2, b"h1", b"payload")
    sftp.open(3, b"/etc/passwd", READ, b"h2")
    assert sftp.events == []
    sftp.watch.finish()
    assert sorted((f["action"], f["path"], f["length"]) for _, f in sftp.events) == [
        ("read", "/etc/passwd", 0),
        ("write", "/etc/cron.d/x", 7),
    ]
    sftp.watch.finish()  # once only
    assert len(sftp.events) == 2


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            _ext(b"posix-rename@openssh.com", _string(b"/tmp/a"), _string(b"/etc/cron.d/a")),
            {"action": "rename", "path": "/tmp/a", "target": "/etc/cron.d/a"},
        ),
        (
            _ext(b"hardlink@openssh.com", _string(b"/tmp/a"), _string(b"/etc/cron.d/b")),
            {"action": "hardlink", "path": "/tmp/a", "target": "/etc/cron.d/b"},
        ),
        (
            _ext(b"lsetstat@openssh.com", _string(b"/etc/cron.d/a"), _u32(4), _u32(0o755)),
            {"action": "lsetstat", "path": "/etc/cron.d/a"},
        ),
        (
            _ext(b"frobnicate@example.com", b"anything"),
            {"action": "extended", "name": "frobnicate@example.com"},
        ),
        (
            _ext(b"\xffodd"),
            {"action": "extended", "name": "\\xffodd"},
        ),
    ],
    ids=["posix-rename", "hardlink", "lsetstat", "unknown", "undecodable-name"],
)
def test_sftp_extended_requests_are_reported(parts: tuple[bytes, ...], expected: Any) -> None:
    sftp = _Sftp()
    sftp.ask(200, 1, *parts)
    assert sftp.events == [("I", expected)]


def test_sftp_read_only_extended_queries_are_not_noise() -> None:
    sftp = _Sftp()
    sftp.ask(200, 1, *_ext(b"limits@openssh.com"))
    sftp.ask(200, 2, *_ext(b"statvfs@openssh.com", _string(b"/")))
    assert sftp.events == []


def test_sftp_copy_data_and_fsetstat_name_the_files() -> None:
    sftp = _Sftp()
    sftp.open(1, b"/tmp/src", READ, b"r")
    sftp.open(2, b"/etc/cron.d/x", WRITE, b"w")
    copy = _ext(b"copy-data", _string(b"r"), _u64(0), _u64(0), _string(b"w"), _u64(0))
    sftp.ask(200, 3, *copy)
    sftp.ask(10, 4, _string(b"w"), _u32(4), _u32(0o755))  # FSETSTAT: chmod 755
    assert sftp.events == [
        ("I", {"action": "copy-data", "path": "/etc/cron.d/x", "source": "/tmp/src"}),
        ("I", {"action": "fsetstat", "path": "/etc/cron.d/x"}),
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        _packet(3, 1, b"\x00\x00"),  # OPEN cut short
        struct.pack(">I", 10**7) + b"\x03",  # longer than any packet
    ],
    ids=["truncated-open", "huge-packet"],
)
def test_sftp_stream_not_followed_is_reported_and_stopped(garbage: bytes) -> None:
    sftp = _Sftp()
    sftp.watch.from_user(garbage)
    [(outcome, fields)] = sftp.events
    assert outcome == "W"
    assert fields["action"] == "unfollowed"
    assert fields["error"]
    assert sftp.stopped == 1
    sftp.watch.from_user(garbage)  # reported once
    assert len(sftp.events) == 1


class _Scp:
    """A watched scp transfer; ``talk`` plays both ends in lock-step, as scp does."""

    def __init__(self, target: str = "/tmp/d", upload: bool = True) -> None:
        self.events: Events = []
        self.stopped = 0
        self.watch = ScpWatch(
            lambda outcome, fields: self.events.append((outcome, fields)), upload, target, True
        )
        self.watch.stop = self._stop

    def _stop(self) -> None:
        self.stopped += 1

    def send(self, data: bytes) -> None:
        """Bytes from the side that sends the files."""
        (self.watch.from_user if self.watch.upload else self.watch.from_node)(data)

    def answer(self, data: bytes = b"\0") -> None:
        """Bytes from the side that receives them."""
        (self.watch.from_node if self.watch.upload else self.watch.from_user)(data)

    def talk(self, *records: bytes) -> None:
        """The receiver's first answer, then each record (in pieces, as a channel delivers
        it) answered with ``\\0``."""
        self.answer()
        for record in records:
            for at in range(0, len(record), 5):
                self.send(record[at : at + 5])
            self.answer()


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (
            [b"C0644 7 \xffbad\n", b"secret\n\0", b"C0644 7 hidden\n", b"secret\n\0"],
            [("/tmp/d/\\xffbad", 7), ("/tmp/d/hidden", 7)],
        ),
        ([b"C0755 3 run\n", b"abc\0"], [("/tmp/d/run", 3)]),
        ([b"D0755 0 sub\n", b"C0644 1 f\n", b"x\0", b"E\n"], [("/tmp/d/sub/f", 1)]),
        ([b"T1 0 2 0\n", b"C0644 0 empty\n", b"\0"], [("/tmp/d/empty", 0)]),
    ],
    ids=["undecodable-first-name", "plain", "directory", "times-and-empty"],
)
@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
def test_scp_files_are_reported(
    records: list[bytes], expected: list[tuple[str, int]], upload: bool
) -> None:
    scp = _Scp(upload=upload)
    scp.talk(*records)
    if not upload:  # a download's first D is the requested directory itself
        expected = [(path.replace("/sub", ""), length) for path, length in expected]
    assert [(f["path"], f["length"]) for _, f in scp.events] == expected
    assert all(outcome == "I" for outcome, _ in scp.events)
    assert {f["action"] for _, f in scp.events} == {"upload" if upload else "download"}
    assert scp.stopped == 0


def test_scp_huge_length_is_reported_and_refused() -> None:
    scp = _Scp()
    scp.talk(b"C0644 %d big\n" % 10**23)
    [(outcome, fields)] = scp.events
    assert outcome == "W"
    assert (fields["action"], fields["path"], fields["length"]) == ("upload", "/tmp/d/big", 10**23)
    assert scp.stopped == 1


def test_scp_file_cut_short_is_reported_at_the_end() -> None:
    scp = _Scp()
    scp.talk(b"C0644 1000000 big\n")
    scp.send(b"x" * 1000)
    assert scp.events == []
    scp.watch.finish()
    [(outcome, fields)] = scp.events
    assert outcome == "W"
    assert (fields["path"], fields["length"]) == ("/tmp/d/big", 1000)
    assert fields["error"]


@pytest.mark.parametrize(
    "line",
    [b"C0644 notanumber f\n", b"C0644\n", b"C0644 -5 f\n", b"x" * 5000],
    ids=["length-not-a-number", "no-fields", "negative-length", "endless-line"],
)
def test_scp_stream_not_followed_is_reported_and_stopped(line: bytes) -> None:
    scp = _Scp()
    scp.answer()
    scp.send(line)
    [(outcome, fields)] = scp.events
    assert outcome == "W"
    assert fields["action"] == "unfollowed"
    assert scp.stopped == 1


# Round 2 (adversarial review, findings 2 and 3): the attackers' exact byte streams.


def _scp_upload() -> _Scp:
    """An upload watcher past scp's first answer (``\\0``, the sink is ready)."""
    scp = _Scp()
    scp.watch.from_node(b"\0")
    return scp


def _forwarded(watch: ScpWatch, data: bytes) -> bytes:
    """What of ``data`` the node lets on to scp (nothing once the watcher has stopped)."""
    watch.from_user(data)
    return b"" if watch.broken else data


def test_scp_error_line_is_not_a_header() -> None:
    """scp_desync.py: ``\\1C0644 60 decoy`` is an error message to ``scp -t``, not a file;
    the real header after it must not pass as the decoy's bytes."""
    scp = _scp_upload()
    real = b"C0644 5 hidden1\nhello\0"
    filler = b"\x01" + b"x" * (60 + 1 - len(real) - 2) + b"\n"
    passed = _forwarded(scp.watch, b"\x01C0644 60 decoy\n" + real + filler)
    paths = [fields.get("path") for _, fields in scp.events]
    assert "/tmp/d/decoy" not in paths, scp.events
    if passed:  # what scp received is reported as scp takes it
        assert ("I", {"action": "upload", "path": "/tmp/d/hidden1", "length": 5}) in scp.events
    else:
        assert [(o, f["action"]) for o, f in scp.events] == [("W", "unfollowed")]
        assert scp.stopped == 1


def test_scp_error_message_then_file_in_lockstep_is_reported() -> None:
    """An error line from the sender is skipped by scp, and so by the watcher: the file after
    it is the one reported."""
    scp = _scp_upload()
    scp.watch.from_user(b"\x01C0644 60 decoy\n")
    scp.watch.from_user(b"C0644 5 hidden1\n")
    scp.watch.from_node(b"\0")
    scp.watch.from_user(b"hello\0")
    scp.watch.from_node(b"\0")
    assert scp.events == [("I", {"action": "upload", "path": "/tmp/d/hidden1", "length": 5})]
    assert scp.stopped == 0


def test_scp_line_at_scps_limit_is_not_followed() -> None:
    """scp_longline.py: scp reads a control line into 2048 bytes, so 2047 bytes with no
    newline are one line to it and the header after them is a file it writes."""
    scp = _scp_upload()
    stream = b"\x01" + b"A" * 2046 + b"C0644 5 longline1\n" + b"hello\0" + b"\n"
    assert _forwarded(scp.watch, stream) == b""
    assert [(o, f["action"]) for o, f in scp.events] == [("W", "unfollowed")]
    assert "longline1" not in str(scp.events)
    assert scp.stopped == 1


def test_scp_status_byte_with_a_message_hides_no_header() -> None:
    """After a file's bytes scp reads a status: anything but ``\\0`` is followed by a message
    line, which scp swallows; the watcher must not take that line for a header."""
    scp = _scp_upload()
    scp.watch.from_user(b"C0644 3 a\n")
    scp.watch.from_node(b"\0")
    assert _forwarded(scp.watch, b"abc\x05C0644 30 decoy\n") != b""
    scp.watch.finish()
    assert [f["path"] for _, f in scp.events] == ["/tmp/d/a"], scp.events


def test_scp_file_scp_could_not_open_takes_no_bytes() -> None:
    """When scp cannot open the file a header names it answers ``\\1...`` and reads no bytes
    for it: what follows is a header again, not the refused file's data."""
    scp = _scp_upload()
    scp.watch.from_user(b"C0644 21 locked\n")
    scp.watch.from_node(b"\x01scp: /tmp/d/locked: Permission denied\n")
    scp.watch.from_user(b"C0644 5 hidden2\n")
    scp.watch.from_node(b"\0")
    scp.watch.from_user(b"hello\0")
    scp.watch.from_node(b"\0")
    assert ("I", {"action": "upload", "path": "/tmp/d/hidden2", "length": 5}) in scp.events
    assert not [f for o, f in scp.events if o == "I" and f["path"] == "/tmp/d/locked"]


@pytest.mark.parametrize(
    "line",
    [b"\x03odd\n", b"\n", b"Z0644 1 f\n", b"C644 1 f\n", b"C0644 1 a/b\n", b"C0644 1 ..\n"],
    ids=["unknown-control-byte", "empty-line", "unknown-letter", "short-mode", "slash", "dotdot"],
)
def test_scp_lines_scp_refuses_are_not_followed(line: bytes) -> None:
    scp = _scp_upload()
    assert _forwarded(scp.watch, line) == b""
    assert [(o, f["action"]) for o, f in scp.events] == [("W", "unfollowed")]


def test_scp_download_refused_by_the_receiver_takes_no_bytes() -> None:
    """Downloads: the user's side answers each header; a refusal means the node's scp sends
    no bytes for that file, so the next header is a file of its own, reported."""
    scp = _Scp(target="/srv", upload=False)
    scp.watch.from_user(b"\0")
    scp.watch.from_node(b"D0755 0 srv\n")
    scp.watch.from_user(b"\0")
    scp.watch.from_node(b"C0644 40 decoy\n")
    scp.watch.from_user(b"\x01no thanks\n")
    scp.watch.from_node(b"C0600 6 secret\n")
    scp.watch.from_user(b"\0")
    scp.watch.from_node(b"s3cr3t\0")
    scp.watch.from_user(b"\0")
    assert ("I", {"action": "download", "path": "/srv/secret", "length": 6}) in scp.events
    assert scp.stopped == 0


def test_sftp_request_id_reused_while_pending_stops_the_transfer() -> None:
    """sftp_idreuse.py: OPEN(1, hidden, write) then OPEN(1, decoy, read) before a reply; the
    watcher keyed by id took the write for a read of the decoy."""
    sftp = _Sftp()
    first = _packet(3, 1, _string(b"/tmp/hidden"), _u32(WRITE | CREAT | TRUNC), _u32(0))
    second = _packet(3, 1, _string(b"/tmp/decoy"), _u32(READ), _u32(0))
    sftp.watch.from_user(first + second)
    assert sftp.watch.broken
    assert [(o, f["action"]) for o, f in sftp.events] == [("W", "unfollowed")]
    assert "request id" in sftp.events[0][1]["error"]
    assert sftp.stopped == 1


def test_sftp_remove_hidden_behind_a_reused_id_stops_the_transfer() -> None:
    sftp = _Sftp()
    remove = _packet(13, 9, _string(b"/tmp/victim"))
    setstat = _packet(9, 9, _string(b"/tmp/decoy"), _u32(0))
    sftp.watch.from_user(remove)
    sftp.watch.from_user(setstat)
    assert sftp.watch.broken
    assert sftp.stopped == 1
    assert not [f for o, f in sftp.events if f.get("action") == "setstat"]


def test_sftp_request_id_may_be_used_again_once_answered() -> None:
    sftp = _Sftp()
    sftp.ask(13, 9, _string(b"/tmp/victim"))
    sftp.ask(9, 9, _string(b"/tmp/decoy"), _u32(0))
    assert [f["action"] for _, f in sftp.events] == ["remove", "setstat"]
    assert sftp.stopped == 0


def test_sftp_handle_used_before_the_node_gave_it_stops_the_transfer() -> None:
    """sftp_race.py guesses sftp-server's first handle and writes through it before the
    HANDLE reply: a write the watcher cannot name, so the transfer stops."""
    sftp = _Sftp()
    opening = _packet(3, 1, _string(b"/tmp/x"), _u32(WRITE | CREAT | TRUNC), _u32(0))
    write = _packet(6, 2, _string(b"\0\0\0\0"), _u64(0), _string(b"data"))
    sftp.watch.from_user(opening + write)
    assert sftp.watch.broken
    assert sftp.stopped == 1


def test_scp_line_just_under_scps_limit_is_followed() -> None:
    scp = _scp_upload()
    scp.watch.from_user(b"\x01" + b"m" * 2044 + b"\n")  # 2046 bytes: one line to scp
    scp.watch.from_user(b"C0644 1 f\n")
    scp.watch.from_node(b"\0")
    scp.watch.from_user(b"x\0")
    scp.watch.from_node(b"\0")
    assert scp.events == [("I", {"action": "upload", "path": "/tmp/d/f", "length": 1})]


def test_scp_status_starting_with_a_newline_reads_on_to_the_next() -> None:
    """scp's ``response()`` keeps the first byte whatever it is and reads a line after it:
    a status of ``\\n`` swallows the header behind it (and ends scp)."""
    scp = _scp_upload()
    scp.watch.from_user(b"C0644 1 a\n")
    scp.watch.from_node(b"\0")
    scp.watch.from_user(b"x\nC0644 9 decoy\n")
    scp.watch.finish()
    assert scp.events == [
        ("W", {"action": "upload", "path": "/tmp/d/a", "length": 1, "error": "C0644 9 decoy"})
    ]


def test_scp_file_sent_whole_but_not_answered_is_reported_whole() -> None:
    scp = _scp_upload()
    scp.watch.from_user(b"C0644 3 a\n")
    scp.watch.from_node(b"\0")
    scp.watch.from_user(b"abc\0")
    scp.watch.finish()
    assert scp.events == [
        ("W", {"action": "upload", "path": "/tmp/d/a", "length": 3, "error": "cut short"})
    ]


def test_sftp_unknown_request_type_holds_no_id() -> None:
    """sftp-server answers nothing to a type it does not know, so its id is free again."""
    sftp = _Sftp()
    sftp.watch.from_user(_packet(50, 7, b"whatever"))
    sftp.ask(13, 7, _string(b"/tmp/victim"))
    assert sftp.events == [("I", {"action": "remove", "path": "/tmp/victim"})]
    assert sftp.stopped == 0
