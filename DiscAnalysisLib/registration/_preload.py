"""Imported by the registration workers' fork server before it forks them: loads itk-elastix once.

Only loads modules (no ITK filter runs), so no thread pool exists in the server when it forks.
See ``batch.worker_context``.
"""

from .elastix import load

try:
    load()
except Exception:  # noqa: BLE001 - itk-elastix missing: each worker reports it per disc (InputError)
    pass
