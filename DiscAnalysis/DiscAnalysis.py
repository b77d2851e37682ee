"""DiscAnalysis Slicer module: lumbar intervertebral disc MRI analysis.

This file is the Slicer-facing shell only (module metadata, widget, parameter node, a thin logic and the
self-test). The computations live in DiscAnalysisLib (pure Python, usable without Slicer) and the
MRML-only helpers in DiscAnalysisModuleLib, which the pytest suite runs on slicer-core.
"""

import logging
from typing import Annotated

import slicer
import vtk
from DiscAnalysisModuleLib.inputs import formatImageInfo, inspectVolumeNode
from DiscAnalysisModuleLib.selftest import ORIENTATION, SIZE_IJK, runSelfTest
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
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
    resultsTable - the table that receives one row per disc.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    age: Annotated[int, WithinRange(0, 120)] = 0
    sex: Annotated[str, Choice(SEX_CHOICES)] = ""
    resultsTable: vtkMRMLTableNode


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

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
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
        inputVolume = self._parameterNode.inputVolume if self._parameterNode else None
        self.ui.inspectButton.enabled = inputVolume is not None
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
