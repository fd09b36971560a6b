"""The proxy's counters, served on ``/metrics`` by the diagnostics listener."""

from collections import Counter
from dataclasses import dataclass, field

from jumpgate.protocol.metrics import MetricLine


@dataclass
class Metrics:
    """Counters for ``/metrics``."""

    sessions: int = 0
    dialback_sessions: int = 0  # of those, on a dial-back data connection
    peered_sessions: int = 0  # of those, relayed to the proxy holding the node's tunnel
    bytes_in: int = 0
    bytes_out: int = 0
    handshake_failures: Counter[str] = field(default_factory=Counter)
    connections_refused: Counter[str] = field(default_factory=Counter)  # over a source's cap

    def lines(self, tunnels: int) -> list[MetricLine]:
        """Samples for ``/metrics``."""
        out: list[MetricLine] = [
            ("jumpgate_proxy_tunnels", "gauge", {}, float(tunnels)),
            ("jumpgate_proxy_sessions_total", "counter", {}, float(self.sessions)),
            (
                "jumpgate_proxy_dialback_sessions_total",
                "counter",
                {},
                float(self.dialback_sessions),
            ),
            (
                "jumpgate_proxy_peered_sessions_total",
                "counter",
                {},
                float(self.peered_sessions),
            ),
            (
                "jumpgate_proxy_bytes_total",
                "counter",
                {"direction": "to_node"},
                float(self.bytes_in),
            ),
            (
                "jumpgate_proxy_bytes_total",
                "counter",
                {"direction": "to_user"},
                float(self.bytes_out),
            ),
        ]
        for listener, count in sorted(self.connections_refused.items()):
            out.append(
                (
                    "jumpgate_proxy_connections_refused_total",
                    "counter",
                    {"listener": listener},
                    float(count),
                )
            )
        for reason, count in sorted(self.handshake_failures.items()):
            out.append(
                (
                    "jumpgate_proxy_handshake_failures_total",
                    "counter",
                    {"reason": reason},
                    float(count),
                )
            )
        return out
