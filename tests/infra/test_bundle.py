"""infra/cdk/bundle.py: the functions' code ships as bytecode Lambda's interpreter can load
without its sources' times (hash-based, unchecked), compiled by a CPython 3.12; without one
it says what to install. (Making a whole bundle needs the package index: ``make bundle``.)"""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNCHECKED_HASH = 0b01  # the flags word of a .pyc: hash-based, source not checked (PEP 552)


pytestmark = pytest.mark.xdist_group("bundle")  # one worker builds the module fixture once


@pytest.fixture(scope="module")
def bundle() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bundle", ROOT / "infra" / "cdk" / "bundle.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_module_is_compiled_unchecked_and_loads_with_its_source_times_changed(
    bundle: ModuleType, tmp_path: Path
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "answer.py").write_text("VALUE = 42\n")
    bundle.precompile(tmp_path, sys.executable)
    [pyc] = (package / "__pycache__").glob("answer.*.pyc")
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == UNCHECKED_HASH
    (package / "answer.py").touch()  # a zip's reset times would invalidate timestamp .pyc
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import pkg.answer as a; print(a.VALUE)"
    done = subprocess.run(
        [sys.executable, "-I", "-B", "-v", "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "42"
    assert f"code object from '{pyc}'" in done.stderr  # loaded from the bytecode


def test_a_module_that_does_not_compile_fails_the_bundle_in_one_line(
    bundle: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(bundle.BundleError, match="compiling the bundle failed"):
        bundle.precompile(tmp_path, sys.executable)


def test_without_a_cpython_312_the_bundle_says_what_to_install(
    bundle: ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(bundle.BundleError, match=r"install python3\.12 \(or set JUMPGATE_LAMB"):
        bundle.lambda_python({"PATH": str(tmp_path), "PYENV_ROOT": str(tmp_path)})
    with pytest.raises(bundle.BundleError, match=r"is not a CPython 3\.12"):
        bundle.lambda_python({"JUMPGATE_LAMBDA_PYTHON": sys.executable})
    missing = str(tmp_path / "python3.12")
    with pytest.raises(bundle.BundleError, match=r"is not a CPython 3\.12"):
        bundle.lambda_python({"JUMPGATE_LAMBDA_PYTHON": missing})


def test_the_cli_prints_one_line_and_exits_2_when_it_cannot_bundle(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "cdk" / "bundle.py"), str(tmp_path / "out")],
        env={"PATH": str(tmp_path), "PYENV_ROOT": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("bundle: no CPython 3.12 found")
    assert not (tmp_path / "out").exists()
