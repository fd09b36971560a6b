"""Command-line programs: ``jump`` (users), ``jumpctl`` (tenant admins), ``jumpgate`` (daemon).

``jump`` and ``jumpctl`` share ``common`` and reach the platform only over its HTTPS API;
``daemon`` is the one place that composes the platform's components.
"""
