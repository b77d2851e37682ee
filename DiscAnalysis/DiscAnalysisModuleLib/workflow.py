"""The clinician's workflow at the MRML level: export the inputs of a step to files, build the command
line of the background run, and load what it wrote back into the scene.

Long steps run in a child process (``PythonSlicer -m DiscAnalysisLib.cli ...``, progress as
``PROGRESS f msg`` lines) so the GUI stays responsive and the user can cancel; this module holds
everything about those runs that does not need Qt, so the pytest suite runs it on slicer-core with a
real scene. The scene is always passed in.

Steps (one labelmap feeds every downstream step, so edits made in Segment Editor flow into all of them):

1. Segment: the input volume -> ``discanalysis segment`` -> a segmentation node, one segment per level.
2. Analyse: the input volume + the (edited) segmentation + optional T2 / T1rho series ->
   ``discanalysis run --labels ...`` -> results table (one row per level, with units), relaxation map
   volumes, the HTML report; optionally atlas registration, whose per-disc transforms and atlas-space
   volumes (registered maps, labels, Jacobian) are loaded as nodes named by level.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from DiscAnalysisLib.errors import InputError

log = logging.getLogger(__name__)

#: Segment colours for "colour by grade" (RGB 0..1): green (grade 1) to red (grade 5), grey = not graded.
GRADE_COLORS = {
    1: (0.10, 0.62, 0.30),
    2: (0.55, 0.78, 0.25),
    3: (0.98, 0.80, 0.18),
    4: (0.95, 0.45, 0.10),
    5: (0.80, 0.10, 0.10),
    None: (0.60, 0.60, 0.60),
}
#: Relaxometry map files written by ``discanalysis run`` and their display ranges (ms).
MAP_FILES = {"T2": ("relaxometry_t2/T2_ms.nrrd", (0.0, 150.0)), "T1rho": ("relaxometry_t1rho/T1rho_ms.nrrd", (0.0, 250.0))}


def exportVolume(volumeNode, path) -> Path:
    """Write a volume node as an image file (geometry kept, LPS on disk) for the background run."""
    if volumeNode is None:
        raise InputError("No input volume is selected. Select the sagittal T2-weighted volume in the Inputs section.")
    from DiscAnalysisLib import image_io, mrml

    return image_io.write_image(mrml.image_from_volume_node(volumeNode), path)


def exportSegmentation(segmentationNode, referenceVolumeNode, path) -> Path:
    """Write the (possibly edited) segmentation as a labelmap on the input volume's grid, project labels
    taken from segment names ("L4-L5"), so renamed or repainted segments map correctly."""
    if segmentationNode is None:
        raise InputError("No segmentation is selected. Run Segment first, or select a segmentation with one segment per level.")
    from DiscAnalysisLib import image_io, mrml

    reference = mrml.image_from_volume_node(referenceVolumeNode)
    labels = mrml.labelmap_from_segmentation_node(segmentationNode, reference)
    return image_io.write_image(labels, path)


def exportSequence(sequenceNode, folder) -> tuple[list[Path], tuple[float, ...] | None]:
    """Write every volume of a sequence node (a multi-echo or spin-lock series) to ``folder``; the times are
    the sequence's index values when its index unit is ms (else None: the user must give them)."""
    from DiscAnalysisLib import image_io, mrml

    folder = Path(folder)
    n = sequenceNode.GetNumberOfDataNodes()
    if n < 2:
        raise InputError(f"The series '{sequenceNode.GetName()}' has {n} volume(s); a fit needs at least 2 time points.")
    paths, times = [], []
    for i in range(n):
        node = sequenceNode.GetNthDataNode(i)
        if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"Item {i + 1} of the series '{sequenceNode.GetName()}' is not a scalar volume.")
        paths.append(image_io.write_image(mrml.image_from_volume_node(node), folder / f"tp_{i + 1:02d}.nrrd"))
        try:
            times.append(float(sequenceNode.GetNthIndexValue(i)))
        except ValueError:
            times = []
    unit = (sequenceNode.GetIndexUnit() or "").strip().lower()
    return paths, (tuple(times) if unit == "ms" and len(times) == n else None)


def parseTimes(text: str) -> tuple[float, ...] | None:
    """'10, 20, 30' -> (10.0, 20.0, 30.0); empty -> None (times from the headers)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return tuple(float(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise InputError(f"Times must be numbers in ms separated by commas, e.g. '10, 20, 30'; got '{text}'.") from None


def segmentArguments(imagePath, outDir) -> list[str]:
    """Arguments of ``python -m DiscAnalysisLib.cli`` for the Segment step."""
    out = Path(outDir)
    return ["--progress", "lines", "segment", str(imagePath), "--out", str(out / "labels.nrrd"), "--qc", str(out / "segmentation_qc.json")]


@dataclass(frozen=True)
class AnalysisRequest:
    """What the Analyse step runs on (files already exported)."""

    imagePath: Path
    labelsPath: Path
    outDir: Path
    caseId: str = ""
    age: float | None = None
    sex: str | None = None
    t2Paths: tuple[Path, ...] = ()
    t2Times: tuple[float, ...] | None = None
    t1rhoPaths: tuple[Path, ...] = ()
    t1rhoTimes: tuple[float, ...] | None = None
    register: bool = False


def analyseArguments(r: AnalysisRequest) -> list[str]:
    """Arguments of ``python -m DiscAnalysisLib.cli`` for the Analyse step (markers, grades, fits, report)."""
    args = ["--progress", "lines", "run", str(r.imagePath), "--labels", str(r.labelsPath), "--out", str(r.outDir)]
    if r.caseId:
        args += ["--case-id", r.caseId]
    if r.age:
        args += ["--age", f"{r.age:g}"]
    if r.sex:
        args += ["--sex", r.sex]
    for flag, paths, times in (("--t2", r.t2Paths, r.t2Times), ("--t1rho", r.t1rhoPaths, r.t1rhoTimes)):
        if paths:
            args += [f"{flag}-series", *map(str, paths)]
            if times:
                args += [f"{flag}-times-ms", ",".join(f"{t:g}" for t in times)]
    if r.register:
        args.append("--register")
    return args


#: Segmentation image flags a reviewer should act on, in words (docs/qc_flags.md has them all); other flags are
#: shown as they are.
SEGMENTATION_FLAG_WORDS = {
    "level_naming_uncertain:disc_below_L5-S1_dropped": "a disc below L5-S1 was dropped as the sacral remnant: "
    "if it is the real L5-S1, every name is one level too low",
    "lowest_disc_kept_by_judge": "the lowest-disc judge kept a thin lowest disc as L5-S1: check the level names",
    "lowest_candidate_dropped_by_judge": "the lowest-disc judge dropped the lowest disc candidate: check the level names",
    "sacrum_not_detected": "no sacrum found below the lowest disc: check that it is L5-S1",
    "disc_level_missing": "a disc level was not found",
    "spacing_assumed": "pixel size unknown, assumed from a 280 mm field of view",
    "no_csf_reference": "no CSF found behind the column: ΔSI needs a CSF segment",
}


def segmentationSummary(qcPath) -> str:
    """One or two lines for the status bar after the Segment step, from its QC file (``segment --qc``): how many
    of the five discs were found and, when the segmentation raised image flags, what to check before Quantify.
    The Analyse step runs on the reviewed segmentation, so this is where these flags reach the user."""
    try:
        qc = json.loads(Path(qcPath).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "Segmented (no QC file: review the levels before Quantify and grade)."
    from DiscAnalysisLib import levels

    found = sum(1 for r in qc.get("levels", []) if r.get("level") in levels.DISCS and r.get("found"))
    text = f"Segmented: {found} of {len(levels.DISCS)} discs found."
    flags = [f for f in qc.get("flags", []) if not f.startswith("extra_discs_above")]
    if not flags:
        return text + " Review the levels, edit if needed, then Quantify and grade."
    words = "; ".join(SEGMENTATION_FLAG_WORDS.get(f, f) for f in flags)
    return f"{text} Check: {words}. Edit in Segment Editor if needed, then Quantify and grade (docs/qc_flags.md)."


def loadSegmentationResult(scene, labelsPath, referenceVolumeNode, name: str = "Disc levels"):
    """Load the Segment step's labelmap as a segmentation node (one named, coloured segment per level)."""
    from DiscAnalysisLib import image_io, mrml

    labels = image_io.read_image(labelsPath)
    node = mrml.segmentation_node_from_labelmap(scene, labels, name, reference_volume_node=referenceVolumeNode)
    return node


@dataclass
class LoadedRegistration:
    """The nodes made from a registration output folder (``discanalysis register --out`` or the
    ``registration/`` folder of ``discanalysis run --register``)."""

    rows: list[dict]  # registration_report.csv, one row per level (status, reason, Dice, Jacobian SD, ...)
    transformNodes: dict = field(default_factory=dict)  # (level, "atlas_to_patient" | "patient_to_atlas") -> node
    volumeNodes: dict = field(default_factory=dict)  # (level, name) -> volume node on the atlas disc grid


@dataclass
class LoadedResults:
    tableNode: object
    rows: list[dict]
    mapNodes: dict = field(default_factory=dict)
    reportPath: Path | None = None
    registration: LoadedRegistration | None = None


#: Node attribute marking the nodes loadRegistrationResults made (value: the level), so a rerun replaces them.
REGISTRATION_ATTRIBUTE = "DiscAnalysis.RegistrationLevel"
#: Registered images that are labelmaps (nearest-neighbour warped labels, the atlas disc mask).
REGISTRATION_LABELMAPS = ("labels", "atlas_mask")
#: Display ranges of registered maps (file stem -> (min, max)); the Jacobian determinant around 1.
REGISTRATION_RANGES = {"T2_ms": (0.0, 150.0), "T1rho_ms": (0.0, 250.0), "jacobian": (0.5, 1.5)}


def loadRegistrationResults(scene, folder) -> LoadedRegistration:
    """Load a registration output folder into the scene: per registered disc, both transforms as
    transform nodes ("L4-L5 atlas to patient", "L4-L5 patient to atlas") and every registered image as a
    volume node on the atlas disc grid ("L4-L5 T2_ms (atlas)"; labels and atlas mask as labelmaps).

    Nodes from an earlier load are removed first. A disc that was skipped or failed has its row (with
    the reason) and no nodes. In 2D, images and transforms lie in the z = 0 plane, and the patient side
    of the transforms is the disc's mid-sagittal slice (in-plane coordinates from (0, 0)), not the 3D
    patient volume.
    """
    import csv

    from DiscAnalysisLib import image_io, mrml

    folder = Path(folder)
    report = folder / "registration_report.csv"
    if not report.is_file():
        raise InputError(f"No registration results in {folder} (registration_report.csv is missing): "
                         "the registration did not run or did not finish.")
    with open(report, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    removeRegistrationNodes(scene)
    loaded = LoadedRegistration(rows)
    for row in rows:
        level = row.get("level", "")
        d = folder / level
        if row.get("status") != "ok" or not d.is_dir():
            continue
        for stem in ("atlas_to_patient", "patient_to_atlas"):
            path = d / f"{stem}.h5"
            if path.is_file():
                node = mrml.load_transform(scene, path, name=f"{level} {stem.replace('_', ' ')}")
                node.SetAttribute(REGISTRATION_ATTRIBUTE, level)
                loaded.transformNodes[(level, stem)] = node
        for path in sorted(d.glob("*.nrrd")):
            name = path.name[: -len(".nrrd")]
            node = mrml.volume_node_from_image(scene, image_io.read_image(path), f"{level} {name} (atlas)",
                                               labelmap=name in REGISTRATION_LABELMAPS)
            node.SetAttribute(REGISTRATION_ATTRIBUTE, level)
            display = node.GetDisplayNode()
            if name in REGISTRATION_RANGES and display is not None:
                display.AutoWindowLevelOff()
                display.SetWindowLevelMinMax(*REGISTRATION_RANGES[name])
            loaded.volumeNodes[(level, name)] = node
    return loaded


def removeRegistrationNodes(scene) -> int:
    """Remove the nodes an earlier :func:`loadRegistrationResults` made (with their display and storage
    nodes); returns how many data nodes were removed."""
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    ours = [n for n in nodes if n is not None and n.GetAttribute(REGISTRATION_ATTRIBUTE)]
    for node in ours:
        helpers = []
        for count, nth in (("GetNumberOfDisplayNodes", "GetNthDisplayNode"),
                           ("GetNumberOfStorageNodes", "GetNthStorageNode")):
            if hasattr(node, count):
                helpers += [getattr(node, nth)(i) for i in range(getattr(node, count)())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is not None:
                scene.RemoveNode(helper)
    return len(ours)


def loadAnalysisResults(scene, outDir, tableNode=None, name: str = "Disc results") -> LoadedResults:
    """Load ``results.json`` into a table node (one row per level, units and descriptions as column
    properties), the relaxation maps as volume nodes and, when the run registered the discs, the
    registration (:func:`loadRegistrationResults`)."""
    from DiscAnalysisLib import image_io, mrml
    from DiscAnalysisLib.pipeline import RESULT_COLUMNS

    out = Path(outDir)
    results = out / "results.json"
    if not results.is_file():
        raise InputError(f"No results in {out} (results.json is missing): the analysis did not finish.")
    data = json.loads(results.read_text(encoding="utf-8"))
    rows = [{k: _clean(v) for k, v in r.items()} for r in data["levels"]]
    units = {k: u for k, _, u in RESULT_COLUMNS}
    descriptions = {k: h for k, h, _ in RESULT_COLUMNS}
    if tableNode is not None:
        scene.RemoveNode(tableNode)
    tableNode = mrml.table_node_from_rows(scene, rows, name, units=units, descriptions=descriptions)
    maps = {}
    for title, (rel, (lo, hi)) in MAP_FILES.items():
        path = out / rel
        if path.is_file():
            node = mrml.volume_node_from_image(scene, image_io.read_image(path), f"{title} map (ms)")
            display = node.GetDisplayNode()
            if display is not None:
                display.AutoWindowLevelOff()
                display.SetWindowLevelMinMax(lo, hi)
                if scene.GetNodeByID("vtkMRMLColorTableNodeFileViridis.txt") is not None:
                    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileViridis.txt")
            maps[title] = node
    report = out / "report.html"
    registration = None
    if (out / "registration" / "registration_report.csv").is_file():
        registration = loadRegistrationResults(scene, out / "registration")
    return LoadedResults(tableNode, rows, maps, report if report.is_file() else None, registration)


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def colourSegmentsByGrade(segmentationNode, rows) -> int:
    """Colour each disc segment by its Pfirrmann grade (GRADE_COLORS); returns the number recoloured."""
    from DiscAnalysisLib import levels

    grades = {r["level"]: r.get("grade") for r in rows}
    segmentation = segmentationNode.GetSegmentation()
    changed = 0
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        name = levels.normalise_name(segment.GetName())
        if name in grades:
            grade = grades[name]
            segment.SetColor(*GRADE_COLORS.get(int(grade) if grade is not None else None, GRADE_COLORS[None]))
            changed += 1
    return changed


def restoreLevelColours(segmentationNode) -> None:
    """Back to the fixed per-level colours."""
    from DiscAnalysisLib import levels

    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        colour = levels.LEVEL_COLORS.get(levels.normalise_name(segment.GetName()))
        if colour:
            segment.SetColor(*colour)
