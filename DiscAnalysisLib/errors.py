"""Exceptions whose messages are meant for the user.

Every error a user can cause (bad file, wrong orientation, missing echo times, ...) is raised as a
:class:`DiscAnalysisError` subclass whose message names the problem *and* the fix. The CLI prints the
message on one line and exits with code 2; the Slicer widget shows it in a dialog. Anything else that
escapes is a bug in DiscAnalysis.
"""

from __future__ import annotations


class DiscAnalysisError(Exception):
    """Base class for errors a user can act on."""


class InputError(DiscAnalysisError):
    """The input data (file, array, labelmap, parameters) cannot be used as given."""


class MissingDependencyError(DiscAnalysisError):
    """An optional dependency needed for a step is not installed."""


class CancelledError(DiscAnalysisError):
    """The user cancelled a long-running step (raised between chunks of work)."""


def require(module_name: str, purpose: str, install_hint: str | None = None):
    """Import ``module_name`` or raise :class:`MissingDependencyError` saying how to get it.

    Heavy optional dependencies (torch, MONAI, itk-elastix) are imported lazily through this helper so
    that ``import DiscAnalysisLib`` stays fast and a missing package gives an actionable message.
    """
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - exercised only when the package is absent
        hint = install_hint or f"pip install {module_name.split('.')[0]}"
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module_name}', which is not installed ({exc}). "
            f"Install it with: {hint}"
        ) from exc
