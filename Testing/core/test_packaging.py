"""The install and CI wiring that a newcomer relies on."""

import re
import sys

from conftest import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


def _pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_packaged():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    lib = REPO_ROOT / "DiscAnalysisLib"
    found = {
        "DiscAnalysisLib" + ("." + ".".join(p.parent.relative_to(lib).parts) if p.parent != lib else "")
        for p in lib.rglob("__init__.py")
    }
    assert found <= listed, f"subpackages missing from pyproject [tool.setuptools] packages: {found - listed}"


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_block = next(b for b in blocks if "pytest" in b)
    # the README command after creating/activating the virtual environment
    readme_cmd = test_block.split("&& . .venv/bin/activate && ", 1)[1].strip()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert readme_cmd in ci.splitlines(), "README's test command and .ci/run have drifted apart"
    assert "pip install torch==2.13.0" in ci.split(readme_cmd)[0] + readme_cmd.split("&&")[0]


def test_demo_command_in_readme_uses_the_console_script():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "discanalysis demo --out" in readme
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["discanalysis"] == "DiscAnalysisLib.cli.main:main"
