"""Helpers of the DiscCohort module that need MRML nodes but no Slicer application.

* :func:`statsArguments` turns the panel's values into the ``discanalysis stats`` command line that the
  widget runs in a child process (``PythonSlicer -m DiscAnalysisLib.cli ...``), so long permutation runs never
  block the GUI;
* :func:`loadResults` reads the outputs that run wrote (summary.json, NRRD maps) and adds them to the scene
  given: the mean map (the background "atlas" intensity), the statistic map (r or t) and the significance
  mask per analysis, plus a table node with the summary rows.

Both run on the ``slicer-core`` PyPI package (pytest: Testing/module/test_cohort_module_lib.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from DiscAnalysisLib.errors import InputError

TESTS = ("pearson", "partial", "welch", "student", "paired", "map-corr")
CORRECTIONS = ("fdr", "bonferroni", "maxt", "none")


def statsArguments(
    cohortFile: str,
    outputDirectory: str,
    test: str = "pearson",
    variable: str = "",
    covariates: str = "",
    groupColumn: str = "",
    correction: str = "fdr",
    permutations: int = 1000,
    minSubjects: int = 5,
    atlasFile: str = "",
) -> list[str]:
    """Arguments after ``-m DiscAnalysisLib.cli`` for the requested analysis (progress as PROGRESS lines).

    Raises InputError for what the panel can check before starting a process (missing file or folder,
    missing variable for a correlation, missing group for a t-test)."""
    if not cohortFile or not Path(cohortFile).is_file():
        raise InputError(f"Cohort file not found: '{cohortFile}'. Select the cohort CSV (subject, level, map_* columns).")
    if not outputDirectory:
        raise InputError("Select an output folder for the statistic maps.")
    if test not in TESTS or correction not in CORRECTIONS:
        raise InputError(f"Unknown test '{test}' or correction '{correction}'.")
    if test in ("pearson", "partial") and not variable.strip():
        raise InputError(f"The {test} test correlates the maps with a variable: enter its column name (e.g. age).")
    if test == "partial" and not covariates.strip():
        raise InputError("The partial test needs covariates: enter column names separated by commas (e.g. age,sex,bmi).")
    if test in ("welch", "student") and not groupColumn.strip():
        raise InputError("A t-test between groups needs the name of a two-valued group column.")
    args = ["--progress", "lines", "stats", str(cohortFile), "--out", str(outputDirectory), "--test", test,
            "--correction", correction, "--min-subjects", str(int(minSubjects))]
    if variable.strip() and test in ("pearson", "partial"):
        args += ["--variable", variable.strip()]
    if covariates.strip() and test == "partial":
        args += ["--covariates", covariates.replace(" ", "")]
    if groupColumn.strip() and test in ("welch", "student"):
        args += ["--group", groupColumn.strip()]
    if correction == "maxt":
        args += ["--permutations", str(int(permutations))]
    if atlasFile:
        if not Path(atlasFile).is_file():
            raise InputError(f"Atlas image not found: '{atlasFile}'. Select the atlas the maps were registered to, or none.")
        args += ["--atlas", str(atlasFile)]
    return args


@dataclass
class LoadedResults:
    """Nodes added by :func:`loadResults`: per analysis name, the mean, statistic and significance nodes."""

    meanNodes: dict = field(default_factory=dict)
    statNodes: dict = field(default_factory=dict)
    significantNodes: dict = field(default_factory=dict)
    tableNode: object = None
    atlasNode: object = None
    rows: list = field(default_factory=list)

    def backgroundNode(self, name: str):
        """The atlas when one was loaded, else the mean map of analysis ``name``."""
        return self.atlasNode if self.atlasNode is not None else self.meanNodes[name]


def loadResults(scene, outputDirectory: str, atlasFile: str = "") -> LoadedResults:
    """Add the maps written by ``discanalysis stats`` into ``outputDirectory`` to ``scene``.

    For each summary row: ``<level> <map> mean`` (the mean map of the included subjects, used as the
    background), ``<level> <map> <r|t>`` (the statistic) and ``<level> <map> significant`` (a labelmap,
    1 where q < alpha); with ``atlasFile``, the atlas image as "Disc atlas" (the background to show the maps
    over). Volumes go through DiscAnalysisLib.mrml.volume_node_from_image, so their geometry is the atlas
    geometry of the NRRD files.
    """
    from DiscAnalysisLib import image_io, mrml

    out = Path(outputDirectory)
    summary = out / "summary.json"
    if not summary.is_file():
        raise InputError(f"No results in {out} (summary.json is missing). Run the analysis first.")
    rows = json.loads(summary.read_text(encoding="utf-8"))
    loaded = LoadedResults(rows=rows)
    for row in rows:
        level, mapName, test = row["level"], row["map"], row["test"]
        prefix = out / level / f"{mapName}_{test}"
        name = f"{level} {mapName} {test}"
        statKey = "r" if Path(f"{prefix}_r.nrrd").is_file() else "t"
        for key, target, labelmap in (("mean", loaded.meanNodes, False), (statKey, loaded.statNodes, False),
                                      ("significant", loaded.significantNodes, True)):
            path = Path(f"{prefix}_{key}.nrrd")
            if not path.is_file():
                raise InputError(f"{path} is missing; the results folder is incomplete. Run the analysis again.")
            image = image_io.read_image(path)
            target[name] = mrml.volume_node_from_image(scene, image, f"{name} {key}", labelmap=labelmap)
    if atlasFile:
        loaded.atlasNode = mrml.volume_node_from_image(scene, image_io.read_image(atlasFile), "Disc atlas")
    tableRows = [{k: v for k, v in r.items() if k != "files"} for r in rows]
    loaded.tableNode = mrml.table_node_from_rows(scene, tableRows, name="DiscCohort summary")
    return loaded
