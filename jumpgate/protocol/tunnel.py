"""What a node agent and the proxy say to each other over the reverse tunnel.

The agent asks the proxy to "listen" on ``LISTEN_HOST`` ports inside the tunnel: its SSH
server (``ports.NODE_SSH``) and dial-back requests (``ports.DIALBACK``); nothing listens on
a socket. It opens short-lived session channels to the subsystems below, each carrying
JSON lines of at most ``MAX_LINE_BYTES``.
"""

LISTEN_HOST = "jumpgate-node"
HEARTBEAT_SUBSYSTEM = "jumpgate-heartbeat"
"""What the node reports of itself (hostname, address, version, labels), when it changes."""
RENEW_SUBSYSTEM = "jumpgate-renew"
"""A fresh host certificate for the key the tunnel authenticated with."""
AUDIT_SUBSYSTEM = "jumpgate-audit"
"""A batch of the node's own audit events (exec, shell sessions)."""
MAX_LINE_BYTES = 16 * 1024
AUDIT_TEMPFAIL = 75
"""The audit subsystem's exit status for "not now: send it again later" (EX_TEMPFAIL); any
other failure is a refusal of what was sent."""
DATA_HELLO = b"JGDATA "
"""First bytes of a dial-back data connection, before its token and a newline."""
