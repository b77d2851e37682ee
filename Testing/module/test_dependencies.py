"""Dependency check on first use (DiscAnalysisModuleLib.dependencies), with injected installers: what would
be installed for each step, without installing anything. Plain Python; no Slicer needed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from DiscAnalysisLib.errors import MissingDependencyError

MODULE_DIR = REPO_ROOT / "DiscAnalysis"


@pytest.fixture
def deps(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    import DiscAnalysisModuleLib.dependencies

    return DiscAnalysisModuleLib.dependencies


class Recorder:
    """Installer double: records requirements and 'installs' them by marking their modules available."""

    def __init__(self, deps, present):
        self.deps, self.present, self.calls, self.torchCalls = deps, set(present), [], 0

    def available(self, name):
        return name in self.present

    def install(self, requirements):
        self.calls.append(list(requirements))
        byRequirement = {r: m for m, r in self.deps.REQUIREMENTS.items()}
        self.present |= {byRequirement[r] for r in requirements}

    def installTorch(self):
        self.torchCalls += 1
        self.present.add("torch")
        return True


def test_segment_installs_exactly_what_is_missing_and_torch_through_the_extension(deps):
    rec = Recorder(deps, present={"skimage"})
    installed = deps.ensureDependencies("segment", installer=rec.install, torchInstaller=rec.installTorch,
                                        available=rec.available)
    assert installed == ["torch", "monai>=1.3"]
    assert rec.calls == [["monai>=1.3"]] and rec.torchCalls == 1
    # Second use: everything present, nothing installed.
    assert deps.ensureDependencies("segment", installer=rec.install, torchInstaller=rec.installTorch,
                                   available=rec.available) == []
    assert rec.calls == [["monai>=1.3"]] and rec.torchCalls == 1


def test_analyse_with_register_adds_elastix_once_and_no_torch_when_present(deps):
    rec = Recorder(deps, present={"torch"})
    installed = deps.ensureDependencies(["analyse", "register"], installer=rec.install,
                                        torchInstaller=rec.installTorch, available=rec.available)
    assert installed == ["threadpoolctl>=3", "matplotlib>=3.7", "itk-elastix>=0.20"]  # matplotlib listed once
    assert rec.torchCalls == 0


def test_stats_and_classify(deps):
    assert deps.missingRequirements("stats", lambda m: False) == (False, ["statsmodels>=0.14", "matplotlib>=3.7", "threadpoolctl>=3"])
    assert deps.missingRequirements("classify", lambda m: False) == (False, ["scikit-learn>=1.3", "skops>=0.10", "matplotlib>=3.7"])


def test_simpleitk_is_never_installed(deps):
    everything = deps.missingRequirements(list(deps.STEP_MODULES), lambda m: False)[1]
    assert everything and not [r for r in everything if "simpleitk" in r.lower()]
    assert not [m for m in deps.REQUIREMENTS if m.lower().startswith("simpleitk")]


def test_declined_or_failed_installation_is_one_actionable_error(deps):
    def decline(requirements):
        raise RuntimeError("User declined")

    with pytest.raises(MissingDependencyError, match=r"PythonSlicer -m pip install \"statsmodels>=0.14\""):
        deps.ensureDependencies("stats", installer=decline, available=lambda m: m != "statsmodels")
    with pytest.raises(MissingDependencyError, match="PyTorch was not installed"):
        deps.ensureDependencies("grade", torchInstaller=lambda: None, available=lambda m: False)
    def pipFails(requirements):
        raise subprocess.CalledProcessError(1, ["pip", "install", *requirements])

    with pytest.raises(MissingDependencyError, match="pip could not install them .*exit code 1.*matplotlib>=3.7"):
        deps.ensureDependencies("report", installer=pipFails, available=lambda m: False)
    # An installer that returns but leaves the package missing (offline, skipped in testing mode).
    with pytest.raises(MissingDependencyError, match="still missing.*skops"):
        deps.ensureDependencies("classify", installer=lambda r: None, available=lambda m: m != "skops")


def test_unknown_step_is_refused(deps):
    with pytest.raises(ValueError, match="known steps"):
        deps.ensureDependencies("segmentation", installer=lambda r: None)


def test_module_finder_does_not_import(deps):
    assert deps.moduleAvailable("json") and deps.moduleAvailable("SimpleITK")
    assert not deps.moduleAvailable("discanalysis_no_such_package")
    assert not deps.moduleAvailable("json.no_such_submodule")
    assert not deps.moduleAvailable("discanalysis_no_such_package.sub")
    # A dotted name is found without importing its parent package (find_spec("a.b") would import a).
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from DiscAnalysisModuleLib.dependencies import moduleAvailable;"
        "found = moduleAvailable('itk.ElastixPython') and moduleAvailable('matplotlib.pyplot');"
        "print(found, 'itk' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr


def test_lower_bounds_agree_with_pyproject(deps):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower(): d.replace(" ", "") for d in declared}
    checked = 0
    for requirement in deps.REQUIREMENTS.values():
        name = re.split(r"[<>=!~]", requirement, maxsplit=1)[0].lower()
        if name in bounds:  # scikit-image arrives with the segmentation branch
            assert bounds[name] == requirement, f"{requirement} vs pyproject {bounds[name]}"
            checked += 1
    assert checked >= 7


def _calls_in(function: ast.AST) -> list[str]:
    return [n.func.id for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]


@pytest.mark.parametrize("script, methods", [
    ("DiscAnalysis.py", {"onSegmentButton", "onAnalyseButton"}),
    ("DiscCohort.py", {"onRunButton"}),
])
def test_widgets_ensure_dependencies_before_each_background_step(script, methods):
    tree = ast.parse((MODULE_DIR / script).read_text())
    found = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    for method in methods:
        calls = _calls_in(found[method])
        assert "ensureDependencies" in calls, f"{script}:{method} starts a step without checking its packages"
    # Never at import time: no module-level call.
    top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not any("ensureDependencies" in _calls_in(n) for n in top)
