"""``python -m DiscAnalysisLib.cli`` (used by the Slicer module as ``PythonSlicer -m DiscAnalysisLib.cli``)."""

import sys

from .main import main

sys.exit(main())
