"""Python packages a step needs, checked when the step is first run and installed into Slicer's Python.

Slicer ships numpy, scipy, SimpleITK, pydicom and VTK; everything else DiscAnalysisLib uses is installed on
first use, never at import time (loading the module must stay fast and must work offline), and never by
replacing Slicer's own SimpleITK, which its volume I/O is built against: SimpleITK is deliberately absent
from every list here.

- torch comes from the PyTorch extension (``PyTorchUtils``), which picks the wheel matching the
  computer's GPU/CUDA; a plain ``pip install torch`` could pull several GB of the wrong CUDA build.
- The other packages go through ``slicer.packaging.pip_ensure`` (Slicer 5.12+: asks the user, shows
  progress, offers a restart when an already imported package was updated), else ``slicer.util.pip_install``.

Presence is checked with ``importlib`` finders only (nothing is imported), so the check is cheap and
cannot fail half-way through importing a broken package. Versions are not compared here; the lower
bounds in the requirements are those of pyproject.toml (a test checks they agree).

The installers are injectable so tests (and batch scripts) can see what would be installed without
installing anything. The default installers are the only code of this package that needs the Slicer
application; they are imported lazily when called.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import subprocess
from collections.abc import Callable, Iterable, Sequence

from DiscAnalysisLib.errors import MissingDependencyError

log = logging.getLogger(__name__)

#: Module (as imported) -> pip requirement. Lower bounds as in pyproject.toml.
REQUIREMENTS = {
    "monai": "monai>=1.3",
    "skimage": "scikit-image>=0.21",
    "itk.ElastixPython": "itk-elastix>=0.20",
    "sklearn": "scikit-learn>=1.3",
    "statsmodels": "statsmodels>=0.14",
    "skops": "skops>=0.10",
    "tqdm": "tqdm>=4.66",
    "matplotlib": "matplotlib>=3.7",
    "threadpoolctl": "threadpoolctl>=3",
    "numba": "numba>=0.59",
}
#: torch is not in REQUIREMENTS: it is installed through the PyTorch extension.
TORCH = "torch"

#: Step -> modules it imports beyond what Slicer ships. "analyse" is ``discanalysis run`` on a given
#: segmentation (markers, grades, T2/T1rho fits, report); add "register" when registration is requested.
STEP_MODULES: dict[str, tuple[str, ...]] = {
    "segment": (TORCH, "monai", "skimage"),
    "grade": (TORCH,),
    "fit": ("threadpoolctl", "numba"),
    "report": ("matplotlib",),
    "register": ("itk.ElastixPython", "matplotlib"),
    "analyse": (TORCH, "threadpoolctl", "matplotlib"),
    "stats": ("statsmodels", "matplotlib", "threadpoolctl"),
    "classify": ("sklearn", "skops", "matplotlib"),
    # The command line with a progress bar (``PythonSlicer -m DiscAnalysisLib.cli ... --progress bar``).
    "cli": ("tqdm",),
}

REQUESTER = "DiscAnalysis"


def moduleAvailable(name: str) -> bool:
    """Whether ``name`` (possibly dotted, e.g. "itk.ElastixPython") can be imported, without importing it
    or its parent packages (``importlib.util.find_spec("a.b")`` would import ``a``)."""
    head, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(head)
    except (ImportError, ValueError):
        return False
    for part in rest:
        locations = spec.submodule_search_locations if spec is not None else None
        if not locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(locations))
    return spec is not None


def _steps(step: str | Iterable[str]) -> list[str]:
    steps = [step] if isinstance(step, str) else list(step)
    unknown = [s for s in steps if s not in STEP_MODULES]
    if unknown:
        raise ValueError(f"Unknown step(s) {unknown}; known steps: {', '.join(STEP_MODULES)}")
    return steps


def requiredModules(step: str | Iterable[str]) -> list[str]:
    """Modules the step(s) need, in a stable order without repeats."""
    modules: list[str] = []
    for s in _steps(step):
        modules += [m for m in STEP_MODULES[s] if m not in modules]
    return modules


def missingRequirements(
    step: str | Iterable[str], available: Callable[[str], bool] = moduleAvailable
) -> tuple[bool, list[str]]:
    """(torch missing?, pip requirements of the other missing packages) for the step(s)."""
    modules = [m for m in requiredModules(step) if not available(m)]
    return TORCH in modules, [REQUIREMENTS[m] for m in modules if m != TORCH]


def ensureDependencies(
    step: str | Sequence[str],
    *,
    installer: Callable[[list[str]], object] | None = None,
    torchInstaller: Callable[[], object] | None = None,
    interactive: bool = True,
    available: Callable[[str], bool] = moduleAvailable,
) -> list[str]:
    """Make sure the packages ``step`` needs are importable, installing the missing ones.

    ``step``: a step name ("segment", "analyse", "register", "stats", ...) or a list of them.
    ``installer(requirements)`` installs pip requirements (default: ``slicer.packaging.pip_ensure``, else
    ``slicer.util.pip_install``); ``torchInstaller()`` installs torch (default: the PyTorch extension) and
    returns something falsy when the user declined. ``interactive=False`` installs without asking (batch
    scripts). Returns what was installed (requirement strings, "torch" first when it was). Raises
    MissingDependencyError, naming the packages and how to install them by hand, when they are still
    missing afterwards (declined, offline, or the PyTorch extension is absent).
    """
    needTorch, requirements = missingRequirements(step, available)
    installed: list[str] = []
    if needTorch:
        log.info("DiscAnalysis: installing PyTorch for %s", step)
        try:
            done = (torchInstaller or (lambda: _installTorchWithExtension(interactive)))()
        except subprocess.CalledProcessError as exc:
            raise MissingDependencyError(_manualHint([TORCH], _pipFailed(exc))) from exc
        if not done:
            raise MissingDependencyError(
                "PyTorch was not installed (the installation was declined or failed). Run the step again and "
                "accept the installation, or install torch in the PyTorch Utils module."
            )
        installed.append(TORCH)
    if requirements:
        log.info("DiscAnalysis: installing %s for %s", ", ".join(requirements), step)
        try:
            (installer or (lambda reqs: _pipInstall(reqs, interactive)))(list(requirements))
        except RuntimeError as exc:  # pip_ensure: the user declined
            raise MissingDependencyError(_manualHint(requirements, f"The installation was not done ({exc}).")) from exc
        except subprocess.CalledProcessError as exc:
            raise MissingDependencyError(_manualHint(requirements, _pipFailed(exc))) from exc
        installed += requirements
    if installed:
        importlib.invalidate_caches()
        stillNeedTorch, stillMissing = missingRequirements(step, available)
        if stillNeedTorch or stillMissing:
            names = ([TORCH] if stillNeedTorch else []) + stillMissing
            raise MissingDependencyError(_manualHint(names, "These packages are still missing after the installation."))
    return installed


def _pipFailed(exc: subprocess.CalledProcessError) -> str:
    return f"pip could not install them (exit code {exc.returncode}: offline, behind a proxy, or no write permission?)."


def _manualHint(requirements: Sequence[str], why: str) -> str:
    quoted = " ".join(f'"{r}"' for r in requirements)
    return (
        f"{why} DiscAnalysis needs: {', '.join(requirements)}. Run the step again and accept the installation, "
        f"or install them from a terminal with: PythonSlicer -m pip install {quoted} (then restart Slicer)."
    )


def _pipInstall(requirements: list[str], interactive: bool) -> None:
    """Install with ``slicer.packaging.pip_ensure`` (Slicer 5.12+), else ``slicer.util.pip_install``."""
    try:
        import slicer.packaging as packaging

        pipEnsure = getattr(packaging, "pip_ensure", None)
    except ImportError:
        pipEnsure = None
    if pipEnsure is not None:
        # Raises RuntimeError when the user declines, CalledProcessError when pip fails.
        pipEnsure(requirements, prompt_install=interactive, requester=REQUESTER)
        return
    import slicer.util

    if interactive and not slicer.util.confirmOkCancelDisplay(
        f"{REQUESTER} needs these Python packages, which will be downloaded and installed now:\n"
        + "\n".join(requirements),
        windowTitle=REQUESTER,
    ):
        raise RuntimeError("declined by the user")
    # A space-separated string is accepted by pip_install of every Slicer 5 release.
    slicer.util.pip_install(" ".join(requirements))


def _installTorchWithExtension(interactive: bool):
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise MissingDependencyError(
            "DiscAnalysis needs PyTorch, which comes with the 'PyTorch' extension: install it from the "
            "Extensions Manager (View > Extensions Manager, search 'PyTorch'), restart Slicer and run the step again."
        ) from exc
    return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=interactive)
