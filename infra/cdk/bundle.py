"""Bundle the control-plane functions for Lambda (Python 3.12, arm64) with pip, no Docker.

The project is built into a wheel, then installed with its server dependencies as Lambda's
platform needs them (manylinux2014_aarch64 wheels for CPython 3.12, binary only) into one
directory, which the CDK app uploads as the functions' code (``-c bundle=DIR``).

Every module is compiled to bytecode by a CPython 3.12 before upload. Lambda's code
directory is read-only, so from a bundle of sources alone each cold start compiles every
module the function imports from it again (about 450). The ``.pyc`` files are hash-based and
unchecked: CDK's asset zip resets file times, and the code never changes under a function.

    python infra/cdk/bundle.py build/lambda           # for Lambda
    python infra/cdk/bundle.py --host build/host      # for this machine's interpreter

``--host`` makes the same bundle for the interpreter running this script (what
``bench/coldstart.py`` imports from). The CPython 3.12 is ``JUMPGATE_LAMBDA_PYTHON``, else
``python3.12`` on ``PATH``, else one under pyenv's versions.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_VERSION = "3.12"
LAMBDA_TARGET = (
    *("--platform", "manylinux2014_aarch64", "--implementation", "cp"),
    *("--python-version", LAMBDA_VERSION, "--abi", "cp312", "--only-binary=:all:"),
)


class BundleError(Exception):
    """The bundle cannot be made; ``str()`` says what to do."""


def _version(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lambda_python(environ: dict[str, str] | None = None) -> str:
    """A CPython 3.12 to compile the bytecode Lambda's python3.12 runtime loads."""
    environ = dict(os.environ) if environ is None else environ
    chosen = environ.get("JUMPGATE_LAMBDA_PYTHON")
    if chosen:
        if _version(chosen) != LAMBDA_VERSION:
            raise BundleError(
                f"JUMPGATE_LAMBDA_PYTHON={chosen} is not a CPython {LAMBDA_VERSION}: "
                "point it at a python3.12"
            )
        return chosen
    pyenv = Path(environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [shutil.which("python3.12", path=environ.get("PATH"))]
    candidates += [str(p) for p in sorted(pyenv.glob("versions/3.12*/bin/python3.12"))]
    for candidate in candidates:
        if candidate and _version(candidate) == LAMBDA_VERSION:
            return candidate
    raise BundleError(
        f"no CPython {LAMBDA_VERSION} found to compile the functions' bytecode: "
        "install python3.12 (or set JUMPGATE_LAMBDA_PYTHON to one)"
    )


def _run(what: str, argv: list[str]) -> None:
    """Run a build step; ``BundleError`` with its last line of output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise BundleError(f"{what} failed: {said[-1] if said else f'exit {done.returncode}'}")


def precompile(tree: Path, python: str) -> None:
    """Compile every module under ``tree`` with ``python`` into unchecked hash-based .pyc."""
    compileall = [python, "-m", "compileall", "-q", "-j", "0"]
    _run("compiling the bundle", [*compileall, "--invalidation-mode", "unchecked-hash", str(tree)])


def bundle(out: Path, *, host: bool = False) -> None:
    """The functions' code in ``out``: for Lambda, or with ``host`` for this interpreter."""
    python = sys.executable if host else lambda_python()
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as wheels:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        _run("building the wheel", [*pip, "wheel", "--no-deps", "-w", wheels, str(ROOT)])
        [wheel] = Path(wheels).glob("jumpgate-*.whl")
        target = () if host else LAMBDA_TARGET
        install = [*pip, "install", "--no-compile", "--target", str(out), *target]
        _run("installing the dependencies", [*install, f"{wheel}[server]"])
    for cache in out.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    precompile(out, python)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to make (replaced if present)")
    parser.add_argument("--host", action="store_true", help="for this machine's interpreter")
    args = parser.parse_args()
    try:
        bundle(args.out, host=args.host)
    except (BundleError, OSError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 2
    print(f"bundled into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
