"""Translate ``template.yaml`` (SAM) to CloudFormation with aws-sam-translator and lint the
result with cfn-lint; exit 1 with the findings, 0 when clean.

Runs in its own virtualenv (``make`` builds ``.venv-cfn``): cfn-lint pulls aws-sam-translator,
which pins an older pydantic than the platform's.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

PARAMETERS = {"PublicAddr": "example.sh", "CodeBucket": "artifacts", "CodeKey": "jumpgate.zip"}


class _NoManagedPolicies:
    """The template names no AWS managed policy; a lookup would mean it does."""

    def load(self) -> dict[str, str]:
        raise SystemExit("template.yaml refers to an AWS managed policy: name the actions")


def main(path: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # offline: a region to write ARNs
    try:
        sam = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        print(f"{path}: cannot read the template: {str(exc).splitlines()[0]}")
        return 2
    try:
        translated = transform(sam, PARAMETERS, _NoManagedPolicies())
    except InvalidDocumentException as exc:
        for cause in exc.causes:
            print(f"{path}: sam-translator: {cause.message}")
        return 1
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "template.json"
        out.write_text(json.dumps(translated, indent=1))
        lint = subprocess.run(
            [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
    findings = lint.stdout.strip()
    if lint.returncode != 0 or findings:
        print(findings or lint.stderr.strip())
        return 1
    print(f"{path}: translated ({len(translated['Resources'])} resources), cfn-lint clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
