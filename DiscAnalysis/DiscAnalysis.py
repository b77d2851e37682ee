"""DiscAnalysis Slicer module: lumbar intervertebral disc MRI analysis.

This file is the Slicer-facing shell only (module metadata, widget, parameter node, a thin logic and the
self-test). The computations live in DiscAnalysisLib (pure Python, usable without Slicer) and the
MRML-only helpers in DiscAnalysisModuleLib, which the pytest suite runs on slicer-core.
"""

import logging
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from DiscAnalysisModuleLib import workflow
from DiscAnalysisModuleLib.backgroundrun import BackgroundCliRun, showProgressOn
from DiscAnalysisModuleLib.dependencies import ensureDependencies
from DiscAnalysisModuleLib.inputs import formatImageInfo, inspectVolumeNode
from DiscAnalysisModuleLib.selftest import ORIENTATION, SIZE_IJK, runSelfTest
from slicer import (
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceNode,
    vtkMRMLTableNode,
)
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
# DiscAnalysis
#


class DiscAnalysis(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Disc Analysis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["The DiscAnalysis developers"]
        self.parent.helpText = _(
            "Lumbar intervertebral disc analysis of sagittal MRI: disc and vertebra segmentation with level "
            "labels (L1-L2 to L5-S1), quantitative disc markers, Pfirrmann grading, T2 and T1rho relaxometry, "
            "atlas registration and cohort statistics. Start in <b>Inputs</b>: select the sagittal "
            "T2-weighted volume and press <b>Inspect</b> to see its size, spacing and orientation as the "
            "analysis sees them. Every step is also available without Slicer, from the "
            "<code>discanalysis</code> command line and the DiscAnalysisLib Python package. "
            "Research software, not a medical device."
        )
        self.parent.acknowledgementText = _(
            "DiscAnalysis implements and builds on methods from: "
            "Zheng et al., deep-learning segmentation of lumbar discs and vertebrae for quantitative disc "
            "degeneration markers (BianqueNet, Nature Communications 2022); "
            "machine-learning classification of annular fissures and discogenic pain from regional T2 disc "
            "markers (European Spine Journal 2022;31:1992-1999); "
            "Kowlagi et al., a stronger baseline for automatic Pfirrmann grading of lumbar spine MRI (ISBI 2023); "
            "U-Net disc segmentation with SpineNet-based Pfirrmann classification on sagittal T2-weighted "
            "images; "
            "Iriondo et al., voxel-based T1rho and T2 relaxometry of lumbar discs with deep-learning "
            "segmentation and atlas registration (Magnetic Resonance in Medicine). "
            "Label values follow the SPINEPS / TPTBox convention."
        )


#
# DiscAnalysisParameterNode
#

#: Values of the sex parameter ("" = not given) and how the panel shows them.
SEX_CHOICES = ("", "F", "M")
SEX_LABELS = {"": _("not given"), "F": _("female"), "M": _("male")}



@parameterNodeWrapper
class DiscAnalysisParameterNode:
    """All settings of the module panel, saved with the scene.

    inputVolume - the sagittal T2-weighted lumbar MRI volume.
    age - patient age in years; 0 means not given.
    sex - "F", "M", or "" when not given.
    segmentation - one segment per level; the edited result feeds every later step.
    t2SeriesPath / t2Sequence / t2TimesMs - optional multi-echo T2 series (files take precedence) and its
        echo times when the files do not store them; likewise for the spin-lock T1rho series.
    register - also register each disc to the atlas.
    outputDirectory - where the background runs write (a temporary folder when empty).
    resultsTable - the table that receives one row per disc.
    colourByGrade - colour disc segments by Pfirrmann grade instead of the fixed level colours.
    reportPath - the HTML report of the last analysis (for "Export report", also after reopening a scene).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    age: Annotated[int, WithinRange(0, 120)] = 0
    sex: Annotated[str, Choice(SEX_CHOICES)] = ""
    segmentation: vtkMRMLSegmentationNode
    t2SeriesPath: Path
    t2Sequence: vtkMRMLSequenceNode
    t2TimesMs: str = ""
    t1rhoSeriesPath: Path
    t1rhoSequence: vtkMRMLSequenceNode
    t1rhoTimesMs: str = ""
    register: bool = False
    outputDirectory: Path
    resultsTable: vtkMRMLTableNode
    colourByGrade: bool = False
    reportPath: Path


#
# DiscAnalysisWidget
#


class DiscAnalysisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. GUI state lives in the parameter node; computations go through DiscAnalysisLogic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        # The volume whose description the Inputs section currently shows.
        self._inspectedVolume = None
        # The background run in progress (a BackgroundCliRun) and what to do when it ends well.
        self._process = None
        self._onSuccess = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiscAnalysis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The .ui connects the top-level widget's mrmlSceneChanged signal to each node selector.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DiscAnalysisLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.inspectButton.connect("clicked(bool)", self.onInspectButton)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.editSegmentationButton.connect("clicked(bool)", self.onEditSegmentationButton)
        self.ui.analyseButton.connect("clicked(bool)", self.onAnalyseButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.colourByGradeCheckBox.connect("toggled(bool)", self.onColourByGrade)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReportButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.onCancelButton()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
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
        """Ensure the parameter node exists and is observed; preselect the first volume of the scene."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # Labelmap volumes are scalar volumes too, but not images to analyse (the selector hides them).
            volumeNodes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            firstVolumeNode = next((n for n in volumeNodes if not n.IsA("vtkMRMLLabelMapVolumeNode")), None)
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: "DiscAnalysisParameterNode | None") -> None:
        """Set and observe the parameter node; widgets with a SlicerParameterName property in the .ui are
        bound to the parameter of that name."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            # connectGui fills the sex combo box with the raw choices; show words instead (the binding
            # reads the current index, not the text).
            for index, value in enumerate(SEX_CHOICES):
                self.ui.sexComboBox.setItemText(index, SEX_LABELS[value])
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)
        self._updateGuiState()

    def _updateGuiState(self, caller=None, event=None) -> None:
        """Enable what can run, and drop the description of a volume that is no longer the input."""
        p = self._parameterNode
        inputVolume = p.inputVolume if p else None
        running = self._process is not None
        self.ui.inspectButton.enabled = inputVolume is not None
        self.ui.segmentButton.enabled = inputVolume is not None and not running
        self.ui.editSegmentationButton.enabled = bool(p and p.segmentation)
        self.ui.analyseButton.enabled = bool(inputVolume is not None and p.segmentation) and not running
        self.ui.analyseButton.toolTip = (
            _("Markers, Pfirrmann grades, T2/T1rho fits when series are given, and the report (runs in the background).")
            if self.ui.analyseButton.enabled else _("Select an input volume and a segmentation (run Segment) first")
        )
        self.ui.cancelButton.enabled = running
        self.ui.exportReportButton.enabled = bool(p and str(p.reportPath or "") not in ("", ".") and Path(p.reportPath).is_file())
        self.ui.inspectButton.toolTip = (
            _("Show the size, spacing and orientation of the input volume as the analysis sees them")
            if inputVolume is not None
            else _("Select an input volume first")
        )
        if inputVolume is not self._inspectedVolume:
            self._inspectedVolume = None
            self.ui.inputInfoLabel.text = ""
        # The table view is given no scene in the .ui: without a table view node it would drop its table at
        # the end of every scene batch operation (e.g. loading a scene). It shows the table set here.
        resultsTable = self._parameterNode.resultsTable if self._parameterNode else None
        if self.ui.resultsTableView.mrmlTableNode() is not resultsTable:
            self.ui.resultsTableView.setMRMLTableNode(resultsTable)

    # --------------------------------------------------------------------------------- background runs
    def _startBackgroundRun(self, args, description, onSuccess) -> None:
        """Run ``PythonSlicer -m DiscAnalysisLib.cli <args>`` without blocking the GUI; progress lines drive
        the progress bar; ``onSuccess()`` loads the outputs when the process exits with code 0."""
        self._onSuccess = onSuccess
        self._process = BackgroundCliRun(args, showProgressOn(self.ui.progressBar, self.ui.statusLabel), self._onProcessFinished)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = description
        self._process.start()
        self._updateGuiState()

    def _onProcessFinished(self, ok, output) -> None:
        self._process = None
        onSuccess, self._onSuccess = self._onSuccess, None
        self._updateGuiState()
        if not ok:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(output.errorMessage(_("the background process failed")),
                                     windowTitle=_("Disc Analysis"))
            return
        self.ui.progressBar.value = 100
        with slicer.util.tryWithErrorDisplay(_("Cannot load the results."), waitCursor=True):
            onSuccess()

    def onCancelButton(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            process.cancel()
            self.ui.statusLabel.text = _("Cancelled.")
            self._updateGuiState()

    # ------------------------------------------------------------------------------------------ steps
    def onSegmentButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot start the segmentation."), waitCursor=True):
            ensureDependencies("segment")
            args, outDir = self.logic.segmentCommand(self._parameterNode)
            self._startBackgroundRun(args, _("Segmenting..."), lambda: self._segmentationFinished(outDir))

    def _segmentationFinished(self, outDir) -> None:
        node = self.logic.loadSegmentation(self._parameterNode, outDir)
        self.ui.statusLabel.text = workflow.segmentationSummary(Path(outDir) / "segmentation_qc.json")
        slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=True)
        node.CreateClosedSurfaceRepresentation()

    def onEditSegmentationButton(self) -> None:
        segmentEditor = slicer.util.getModuleWidget("SegmentEditor")
        slicer.util.selectModule("SegmentEditor")
        segmentEditor.editor.setSegmentationNode(self._parameterNode.segmentation)
        segmentEditor.editor.setSourceVolumeNode(self._parameterNode.inputVolume)

    def onAnalyseButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot start the analysis."), waitCursor=True):
            ensureDependencies(["analyse", "register"] if self._parameterNode.register else "analyse")
            args, outDir = self.logic.analyseCommand(self._parameterNode)
            self._startBackgroundRun(args, _("Quantifying and grading..."), lambda: self._analysisFinished(outDir))

    def _analysisFinished(self, outDir) -> None:
        loaded = self.logic.loadResults(self._parameterNode, outDir)
        graded = sum(1 for r in loaded.rows if r.get("grade") is not None)
        status = _("Done: {graded} of {total} discs graded. Outputs in {folder}").format(
            graded=graded, total=len(loaded.rows), folder=outDir)
        if loaded.registration is not None:
            registered = sum(1 for r in loaded.registration.rows if r.get("status") == "ok")
            status += " " + _("{registered} of {total} discs registered to the atlas (transforms and "
                              "atlas-space volumes are in the scene, named by level).").format(
                registered=registered, total=len(loaded.registration.rows))
        self.ui.statusLabel.text = status
        self.onColourByGrade(self._parameterNode.colourByGrade)
        self._updateGuiState()

    def onColourByGrade(self, enabled) -> None:
        # Rows come from the results table, so this also works after reopening a saved scene.
        p = self._parameterNode
        if p and p.segmentation and p.resultsTable:
            self.logic.colourSegments(p, bool(enabled))

    def onExportReportButton(self) -> None:
        reportPath = self._parameterNode.reportPath if self._parameterNode else None
        if not reportPath or not Path(reportPath).is_file():
            return
        target = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), _("Export report"), "disc_report.html", _("HTML report (*.html)"))
        if target:
            with slicer.util.tryWithErrorDisplay(_("Cannot export the report."), waitCursor=True):
                self.logic.exportReport(reportPath, target)

    def onInspectButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot inspect the input volume."), waitCursor=True):
            info = self.logic.inspectInput(self._parameterNode)
            self._inspectedVolume = self._parameterNode.inputVolume
            self.ui.inputInfoLabel.text = formatImageInfo(info)


#
# DiscAnalysisLogic
#


class DiscAnalysisLogic(ScriptedLoadableModuleLogic):
    """Turns parameter node values into DiscAnalysisLib calls. Runs without the GUI (e.g. from the Python
    console or a batch script); raises DiscAnalysisLib errors with messages a user can act on and never
    opens dialogs."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> DiscAnalysisParameterNode:
        return DiscAnalysisParameterNode(super().getParameterNode())

    def inspectInput(self, parameterNode: DiscAnalysisParameterNode):
        """Describe the input volume (a DiscAnalysisLib.image_io.ImageInfo: size, spacing, LPS origin and
        orientation, pixel type) as the analysis sees it."""
        info = inspectVolumeNode(parameterNode.inputVolume)
        logging.info("DiscAnalysis input %s: size %s, orientation %s", info.path, info.size, info.orientation)
        return info

    def _outputDirectory(self, parameterNode: DiscAnalysisParameterNode) -> Path:
        chosen = str(parameterNode.outputDirectory or "")
        if chosen in ("", "."):
            return Path(tempfile.mkdtemp(prefix="DiscAnalysis-"))
        out = Path(chosen)
        out.mkdir(parents=True, exist_ok=True)
        return out

    def segmentCommand(self, parameterNode: DiscAnalysisParameterNode):
        """Export the input volume and return (CLI arguments, output folder) of the Segment step."""
        outDir = self._outputDirectory(parameterNode) / "segmentation"
        image = workflow.exportVolume(parameterNode.inputVolume, outDir / "input.nrrd")
        return workflow.segmentArguments(image, outDir), outDir

    def loadSegmentation(self, parameterNode: DiscAnalysisParameterNode, outDir):
        node = workflow.loadSegmentationResult(slicer.mrmlScene, Path(outDir) / "labels.nrrd", parameterNode.inputVolume)
        parameterNode.segmentation = node
        return node

    def _series(self, path, sequence, timesText, folder):
        path = str(path or "")
        times = workflow.parseTimes(timesText)
        if path not in ("", "."):
            return (Path(path),), times
        if sequence is not None:
            paths, sequenceTimes = workflow.exportSequence(sequence, folder)
            return tuple(paths), times or sequenceTimes
        return (), None

    def analyseCommand(self, parameterNode: DiscAnalysisParameterNode):
        """Export the inputs (volume, edited segmentation, series) and return (CLI arguments, output folder)."""
        p = parameterNode
        outDir = self._outputDirectory(p) / "analysis"
        inputs = outDir / "inputs"
        image = workflow.exportVolume(p.inputVolume, inputs / "t2w.nrrd")
        labels = workflow.exportSegmentation(p.segmentation, p.inputVolume, inputs / "labels.nrrd")
        t2Paths, t2Times = self._series(p.t2SeriesPath, p.t2Sequence, p.t2TimesMs, inputs / "t2_series")
        t1rhoPaths, t1rhoTimes = self._series(p.t1rhoSeriesPath, p.t1rhoSequence, p.t1rhoTimesMs, inputs / "t1rho_series")
        request = workflow.AnalysisRequest(
            imagePath=image, labelsPath=labels, outDir=outDir, caseId=p.inputVolume.GetName(),
            age=float(p.age) if p.age else None, sex=p.sex or None,
            t2Paths=t2Paths, t2Times=t2Times, t1rhoPaths=t1rhoPaths, t1rhoTimes=t1rhoTimes, register=p.register,
        )
        return workflow.analyseArguments(request), outDir

    def loadResults(self, parameterNode: DiscAnalysisParameterNode, outDir):
        loaded = workflow.loadAnalysisResults(slicer.mrmlScene, outDir, parameterNode.resultsTable)
        parameterNode.resultsTable = loaded.tableNode
        if loaded.reportPath is not None:
            parameterNode.reportPath = loaded.reportPath
        return loaded

    def colourSegments(self, parameterNode: DiscAnalysisParameterNode, byGrade: bool) -> None:
        """Colour disc segments by the grades in the results table, or back to the level colours."""
        if byGrade:
            from DiscAnalysisLib import mrml

            rows = mrml.rows_from_table_node(parameterNode.resultsTable)
            workflow.colourSegmentsByGrade(parameterNode.segmentation, rows)
        else:
            workflow.restoreLevelColours(parameterNode.segmentation)

    def exportReport(self, reportPath, target) -> None:
        import shutil

        shutil.copyfile(reportPath, target)

    def runInProcess(self, args) -> None:
        """Run a step in this process (batch scripts and the self-test): the same CLI the GUI runs."""
        from DiscAnalysisLib.cli.main import main

        args = list(args)
        if args[:2] == ["--progress", "lines"]:
            args[1] = "none"
        code = main(args)
        if code != 0:
            raise RuntimeError(f"DiscAnalysis step failed with exit code {code} (see the log).")


#
# DiscAnalysisTest
#


class DiscAnalysisTest(ScriptedLoadableModuleTest):
    """Self-test run from Slicer's Reload & Test. Its body is shared with the pytest suite
    (DiscAnalysisModuleLib.selftest, run on slicer-core by Testing/module/test_selftest_shared.py)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_InspectInput()

    def test_InspectInput(self) -> None:
        self.delayDisplay("Inspecting a synthetic volume of known geometry")
        volumeNode = runSelfTest(slicer.mrmlScene)

        # The Slicer-only path: parameter node -> logic -> the same helper.
        logic = DiscAnalysisLogic()
        parameterNode = logic.getParameterNode()
        parameterNode.inputVolume = volumeNode
        info = logic.inspectInput(parameterNode)
        self.assertEqual(info.size, SIZE_IJK)
        self.assertEqual(info.orientation, ORIENTATION)
        self.delayDisplay("Test passed")
