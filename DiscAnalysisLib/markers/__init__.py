"""Quantitative disc markers: heights and ratios, ΔSI, regional signal, population percentiles.

* :func:`compute_markers` (``compute``): per-level DH, DHI, HDR, area/volume, ΔSI, the 12 regional markers
  and relaxation-time means per zone, with percentiles in the BianqueNet population.
* :func:`ventral_dorsal_zones` (``geometry``): the shared definition of the 5 ventral-dorsal zones.
* :mod:`.columns`: unit and definition of every output column.
* :mod:`.normal_ranges`: the shipped population table and the signal-based grade.

Definitions and their sources are in each module's docstring and in ``docs/markers.md``.
"""

from .compute import DiscMarkers, MarkerReport, MarkerSettings, compute_markers
from .geometry import ventral_dorsal_zones

__all__ = ["DiscMarkers", "MarkerReport", "MarkerSettings", "compute_markers", "ventral_dorsal_zones"]
