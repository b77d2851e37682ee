"""DiscAnalysis core library: lumbar disc MRI segmentation, quantification, grading, relaxometry,
registration and cohort statistics.

Pure Python (numpy, SciPy, SimpleITK; torch/MONAI and itk-elastix imported lazily by the steps that need
them). Runs inside 3D Slicer (shipped with the DiscAnalysis extension) and from a plain ``pip install``.
Importing this package is cheap: submodules are imported on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
