"""The ``jumpgate`` daemon: the one place that composes the platform's components."""
