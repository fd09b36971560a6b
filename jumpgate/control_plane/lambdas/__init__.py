"""The control plane as Lambda functions: one thin module per function (``auth``, ``tokens``,
``resources``, ``audit``, ``internal``), each ``handler = entry_point(Function.X)``.

Everything a function needs is made once per cold start (``runtime``): settings read from
the environment and checked, the master key fetched from Secrets Manager, the stores with
their boto3 and pynamodb clients. Each invocation then runs the same handlers the embedded
daemon calls in-process, for the routes that function owns (``protocol.functions``).
"""
