"""The CDK app: ``python app.py`` synthesizes the platform offline (no CDK CLI, no Docker)
into ``CDK_OUTDIR`` (default ``cdk.out``), with cdk-nag's AwsSolutions checks: a finding not
suppressed with a reason fails the synth.

Context (``-c`` with the CDK CLI, or ``cdk.json``): ``domain``, ``hosted_zone_id``,
``proxy_host_key_secret``, ``proxy_host_public_key``, ``tls_secret``; optional
``min_proxies``/``max_proxies``. ``JUMPGATE_LAMBDA_BUNDLE`` (or context ``bundle``) names the
directory ``bundle.py`` made for the functions' code; without it the source tree alone is
the asset, enough to synthesize and check, not to deploy.
"""

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # this app's modules; jumpgate.protocol

from nag import suppress  # noqa: E402
from platform_stack import ROOT, PlatformStack  # noqa: E402


def main() -> None:
    # The CDK CLI hands cdk.json's context in CDK_CONTEXT_JSON; plain ``python app.py`` reads it.
    context = None
    if "CDK_CONTEXT_JSON" not in os.environ:
        context = json.loads((HERE / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"), context=context)
    bundle = Path(
        os.environ.get("JUMPGATE_LAMBDA_BUNDLE")
        or app.node.try_get_context("bundle")
        or ROOT / "jumpgate"
    )
    stack = PlatformStack(
        app,
        "Jumpgate",
        bundle=bundle,
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION", "us-east-1"),
        ),
    )
    suppress(stack)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))  # type: ignore[attr-defined]
    app.synth()


if __name__ == "__main__":
    main()
