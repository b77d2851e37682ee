"""DiscCohort Slicer module: voxel-wise cohort statistics on atlas-space disc maps.

The Slicer-facing shell only: module metadata, widget, parameter node, a thin logic and the self-test. The
analysis is DiscAnalysisLib.cohortstats (the same code as ``discanalysis stats``), run in a child process so
that long permutation runs leave the GUI responsive; the MRML-level helpers are in
DiscAnalysisModuleLib.cohort, which the pytest suite runs on slicer-core.
"""

import logging
from pathlib import Path
from typing import Annotated

import slicer
import vtk
from DiscAnalysisModuleLib.backgroundrun import BackgroundCliRun, showProgressOn
from DiscAnalysisModuleLib.cohort import CORRECTIONS, TESTS, loadResults, statsArguments
from DiscAnalysisModuleLib.dependencies import ensureDependencies
from slicer import vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# DiscCohort
#


class DiscCohort(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Disc Cohort")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["The DiscAnalysis developers"]
        self.parent.helpText = _(
            "Voxel-wise statistics of a cohort's atlas-space disc maps (T2, T1rho): correlation with a variable "
            "(Pearson, or partial correlation adjusted for covariates), t-tests between two groups (Welch or "
            "Student), paired follow-up vs baseline, and voxel-by-voxel correlation of two maps, with FDR, "
            "Bonferroni or permutation (maxT) correction. Select the cohort CSV (columns subject, level, "
            "map_t2 / map_t1rho paths, covariates) and an output folder, choose the test and press <b>Run</b>; "
            "the maps appear over the cohort's mean map. Same analysis as <code>discanalysis stats</code>. "
            "Research software, not a medical device."
        )
        self.parent.acknowledgementText = _(
            "Implements the voxel-based statistics of Iriondo et al., voxel-based T1rho and T2 relaxometry of "
            "lumbar discs (Magnetic Resonance in Medicine); maxT after Westfall and Young; permutation scheme for "
            "partial correlation after Winkler et al., NeuroImage 2014."
        )


#
# DiscCohortParameterNode
#


@parameterNodeWrapper
class DiscCohortParameterNode:
    """All settings of the panel, saved with the scene.

    cohortFile - the cohort CSV; outputDirectory - where maps and the summary are written; atlasFile - the
    atlas image the maps were registered to (optional: shown under the maps); test, variable,
    covariates, groupColumn, correction, permutations, minSubjects - as for ``discanalysis stats``;
    summaryTable - the table that shows one row per analysis.
    """

    cohortFile: Path
    outputDirectory: Path
    atlasFile: Path
    test: Annotated[str, Choice(TESTS)] = "pearson"
    variable: str = "age"
    covariates: str = ""
    groupColumn: str = ""
    correction: Annotated[str, Choice(CORRECTIONS)] = "fdr"
    permutations: Annotated[int, WithinRange(10, 100000)] = 1000
    minSubjects: Annotated[int, WithinRange(3, 10000)] = 5
    summaryTable: vtkMRMLTableNode


def _optionalPath(path) -> str:
    """'' for an unset Path parameter (the wrapper's default is Path('.'))."""
    text = str(path) if path is not None else ""
    return "" if text in ("", ".") else text


#
# DiscCohortWidget
#


class DiscCohortWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: parameters live in the parameter node; the analysis runs in a child process."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiscCohort.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiscCohortLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.runButton.connect("clicked(bool)", self.onRunButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancelButton()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)
        self._updateGuiState()

    def _updateGuiState(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self._process is not None
        self.ui.runButton.enabled = bool(p and _optionalPath(p.cohortFile)) and not running
        self.ui.cancelButton.enabled = running
        if p:
            self.ui.variableLineEdit.enabled = p.test in ("pearson", "partial")
            self.ui.covariatesLineEdit.enabled = p.test == "partial"
            self.ui.groupLineEdit.enabled = p.test in ("welch", "student")
            self.ui.permutationsSpinBox.enabled = p.correction == "maxt"
        table = p.summaryTable if p else None
        if self.ui.summaryTableView.mrmlTableNode() is not table:
            self.ui.summaryTableView.setMRMLTableNode(table)

    def onRunButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot start the cohort analysis."), waitCursor=True):
            ensureDependencies("stats")
            args = self.logic.commandArguments(self._parameterNode)
            self._process = BackgroundCliRun(args, showProgressOn(self.ui.progressBar, self.ui.statusLabel), self._onProcessFinished)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Running...")
            self._process.start()
            self._updateGuiState()

    def onCancelButton(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            process.cancel()
            self.ui.statusLabel.text = _("Cancelled.")
            self._updateGuiState()

    def _onProcessFinished(self, ok, output) -> None:
        self._process = None
        self._updateGuiState()
        if not ok:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("The cohort analysis failed:") + "\n"
                                     + output.errorMessage(_("the analysis process failed"), lastLines=5))
            return
        self.ui.progressBar.value = 100
        with slicer.util.tryWithErrorDisplay(_("Cannot load the results."), waitCursor=True):
            loaded = self.logic.loadResults(self._parameterNode)
            self.ui.statusLabel.text = output.summary()
            first = next(iter(loaded.statNodes), None)
            if first is not None:
                # the statistic over the atlas (or the cohort's mean map), significant voxels as a labelmap
                slicer.util.setSliceViewerLayers(
                    background=loaded.backgroundNode(first), foreground=loaded.statNodes[first],
                    label=loaded.significantNodes[first], foregroundOpacity=0.5, fit=True,
                )


#
# DiscCohortLogic
#


class DiscCohortLogic(ScriptedLoadableModuleLogic):
    """Turns parameter node values into the ``discanalysis stats`` call and loads its outputs into the
    scene. Usable without the GUI; raises DiscAnalysisLib errors and never opens dialogs."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> DiscCohortParameterNode:
        return DiscCohortParameterNode(super().getParameterNode())

    def commandArguments(self, p: DiscCohortParameterNode) -> list:
        return statsArguments(
            str(p.cohortFile), str(p.outputDirectory), p.test, p.variable, p.covariates, p.groupColumn,
            p.correction, p.permutations, p.minSubjects, _optionalPath(p.atlasFile),
        )

    def run(self, p: DiscCohortParameterNode):
        """Run the analysis in this process (batch use and the self-test) and load its results."""
        from DiscAnalysisLib.cli.main import main

        args = self.commandArguments(p)
        code = main(["--progress", "none", *args[2:]])  # drop the child process's "--progress lines"
        if code != 0:
            raise RuntimeError(f"discanalysis stats failed with exit code {code}")
        return self.loadResults(p)

    def loadResults(self, p: DiscCohortParameterNode):
        loaded = loadResults(slicer.mrmlScene, str(p.outputDirectory), _optionalPath(p.atlasFile))
        p.summaryTable = loaded.tableNode
        logging.info("DiscCohort: loaded %d analyses from %s", len(loaded.rows), p.outputDirectory)
        return loaded


#
# DiscCohortTest
#


class DiscCohortTest(ScriptedLoadableModuleTest):
    """Runs a small synthetic cohort through the logic (the same path as the pytest module tests)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SyntheticCohort()

    def test_SyntheticCohort(self) -> None:
        import tempfile

        from DiscAnalysisLib.cohortstats import make_synthetic_cohort

        self.delayDisplay("Writing a synthetic cohort with a planted age effect")
        folder = Path(tempfile.mkdtemp())
        cohort = make_synthetic_cohort(folder, n_subjects=16, size_ijk=(12, 10, 3))
        logic = DiscCohortLogic()
        p = logic.getParameterNode()
        p.cohortFile = cohort.csv_path.with_name("cohort_baseline.csv")
        p.outputDirectory = folder / "out"
        p.test = "pearson"
        p.variable = "age"
        loaded = logic.run(p)
        self.assertEqual(len(loaded.statNodes), 2)  # map_t2 and map_t1rho
        self.assertIsNotNone(p.summaryTable)
        self.delayDisplay("Test passed")
