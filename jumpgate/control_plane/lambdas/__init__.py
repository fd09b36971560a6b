"""The control plane as Lambda functions: one thin module per function (``auth``, ``tokens``,
``resources``, ``audit``, ``internal``), each ``handler = entry_point(Function.X)``.

Everything a function needs is made once per cold start (``runtime``): settings read from
the environment and checked, the master key fetched from Secrets Manager, the stores with
their boto3 and pynamodb clients. Each invocation then runs the same handlers the embedded
daemon calls in-process, for the routes that function owns (``protocol.functions``).

A cold start makes objects that live as long as the execution environment (modules, classes,
clients), about a hundred thousand of them, so the cyclic collector is paused while the
function's code is imported: the full collection the import would otherwise set off scans
them all and frees almost nothing (about 40 ms here). ``runtime`` moves them to the permanent
generation (``gc.freeze``), where later collections skip them, and resumes collection.
"""

import gc

COLLECTING = gc.isenabled()
"""Whether the collector ran before the pause (``runtime`` leaves it as it found it)."""
gc.disable()
