"""The shape of a metric sample every component reports for ``/metrics``."""

MetricLine = tuple[str, str, dict[str, str], float]
"""(name, type, labels, value); ``type`` is ``gauge`` or ``counter`` (Prometheus)."""
