"""What an asyncssh connection keeps of its key exchange after it is done.

asyncssh 2.24.1 keeps both sides' KEXINIT packets (``_client_kexinit``, ``_server_kexinit``,
about 3.7 KiB with its default algorithm lists) for the life of the connection, although
they are read only while a key exchange computes its hash, and each side's is set again
before the next one (``_send_kexinit``, ``_process_kexinit``). A proxy holding thousands of
idle tunnels pays that per tunnel (docs/benchmarks.md, decision 0021). This drops them once
the exchange is over. It reaches into asyncssh's connection, so it checks what it relies on
and does nothing if that has changed (tests/net/test_kex_memory.py then fails).
"""

from typing import Any

_KEXINITS = ("_client_kexinit", "_server_kexinit")


def drop_kexinits(conn: Any) -> bool:
    """Forget ``conn``'s last KEXINIT packets if no key exchange is under way; whether it did."""
    if not all(isinstance(getattr(conn, name, None), bytes) for name in _KEXINITS):
        return False
    if getattr(conn, "_kex", True) is not None or getattr(conn, "_kexinit_sent", True):
        return False  # an exchange is under way (or asyncssh changed): leave it be
    if getattr(conn, "_kex_complete", False) is not True:
        return False
    for name in _KEXINITS:
        setattr(conn, name, b"")
    return True
