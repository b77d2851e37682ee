"""Helpers of the DiscAnalysis Slicer module that need MRML nodes but no Slicer application.

They run both inside Slicer and on the ``slicer-core`` PyPI package (real MRML nodes, no GUI), which is how
the pytest suite exercises them. Nothing here imports ``qt``, ``ctk`` or ``slicer.app``, and nothing uses
``slicer.mrmlScene``: the scene or the nodes are passed in.

They live in a package rather than next to ``DiscAnalysis.py`` because Slicer tries to load every top-level
``.py`` file of a module folder as a module of its own.
"""
