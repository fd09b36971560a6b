"""One cold start in a fresh interpreter (run by ``bench.coldstart`` as ``python -I -S -B``).

Sees only the bundle and the standard library: imports a module as Lambda imports a
function's handler module, and, given a request (API Gateway v2 event, JSON on stdin),
answers it as the container's first invocation. Prints ``<import ms> <answer ms> <status>``
on its last line (the handler's own log and metric lines come before it).

``--list`` prints instead the modules from the bundle that importing MODULE brought in,
jumpgate's own left out: the dependencies. MODULE may be such a comma-separated list; it is
then imported with the collector paused, as a function's own modules are (``lambdas``).

Usage: python -I -S -B coldstart_probe.py BUNDLE MODULE[,MODULE...] [--request | --list]
"""

import gc
import importlib
import json
import sys
import time


class Context:
    """What Lambda passes a handler, as far as Powertools reads it (``bench.handlers`` too)."""

    function_name = "jumpgate-coldstart"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:jumpgate-coldstart"
    aws_request_id = "00000000-0000-4000-8000-000000000000"


def dependencies(bundle: str) -> list[str]:
    """The modules loaded from ``bundle`` that are not jumpgate's."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (getattr(module, "__file__", None) or "").startswith(bundle)
        and name.partition(".")[0] != "jumpgate"
    )


def main() -> None:
    bundle, names, *rest = sys.argv[1:]
    event = json.loads(sys.stdin.read()) if rest == ["--request"] else None
    sys.path.insert(0, bundle)
    several = "," in names
    began = time.perf_counter()
    if several:
        gc.disable()
    for name in names.split(","):
        module = importlib.import_module(name)
    if several:
        gc.enable()
    imported = time.perf_counter()
    if rest == ["--list"]:
        print(",".join(dependencies(bundle)))
        return
    status = 0
    if event is not None:
        status = int(module.handler(event, Context())["statusCode"])
    answered = time.perf_counter()
    print(f"{(imported - began) * 1000:.3f} {(answered - imported) * 1000:.3f} {status}")


if __name__ == "__main__":
    main()
