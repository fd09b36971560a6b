"""What a node agent and the proxy say to each other over the reverse tunnel.

The agent asks the proxy to "listen" on ``LISTEN_HOST`` ports inside the tunnel: its SSH
server (``ports.NODE_SSH``) and dial-back requests (``ports.DIALBACK``); nothing listens on
a socket. It holds one session channel to ``CONTROL_SUBSYSTEM`` for the tunnel's life,
carrying JSON lines of the messages in ``tunnel_messages`` (hello, heartbeats, audit
batches, renewals, trust updates), and opens a channel to ``ports.RECORDINGS`` to stream
its recordings (JSON lines of at most ``MAX_LINE_BYTES``).
"""

LISTEN_HOST = "jumpgate-node"
CONTROL_SUBSYSTEM = "jumpgate-control"
"""The tunnel's one control channel (``tunnel_messages``)."""
MAX_LINE_BYTES = 16 * 1024
"""The longest line on a recording channel, and the longest audit event."""
DATA_HELLO = b"JGDATA "
"""First bytes of a dial-back data connection, before its token and a newline."""
