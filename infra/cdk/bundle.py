"""Bundle the control-plane functions for Lambda (Python 3.12, arm64) with pip, no Docker.

The project is built into a wheel, then installed with its server dependencies as Lambda's
platform needs them (manylinux2014_aarch64 wheels for CPython 3.12, binary only) into one
directory, which the CDK app uploads as the functions' code (``-c bundle=DIR``).

    python infra/cdk/bundle.py build/lambda
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ("--platform", "manylinux2014_aarch64", "--implementation", "cp")
PYTHON_VERSION = ("--python-version", "3.12", "--abi", "cp312")


def bundle(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as wheels:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, str(ROOT)], check=True)
        [wheel] = Path(wheels).glob("jumpgate-*.whl")
        subprocess.run(
            [
                *pip,
                "install",
                "--target",
                str(out),
                *PLATFORM,
                *PYTHON_VERSION,
                "--only-binary=:all:",
                f"{wheel}[server]",
            ],
            check=True,
        )
    for cache in out.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python infra/cdk/bundle.py OUT_DIR")
    bundle(Path(sys.argv[1]))
    print(f"bundled into {sys.argv[1]}")
