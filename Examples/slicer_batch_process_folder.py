"""Process a folder of cases with 3D Slicer, without the GUI: one scene (.mrb) per case and one combined table.

Run with Slicer's own Python (the DiscAnalysis extension installed)::

    Slicer --no-main-window --python-script Examples/slicer_batch_process_folder.py -- \
        --cases /data/lumbar --out /data/lumbar_results [--age-csv /data/ages.csv] [--register]

Each case is an entry of ``--cases``: an image file (.nrrd, .nii, .nii.gz, .mha, .mhd, .nhdr) or a folder
holding one DICOM series (the sagittal T2-weighted scan). For each case the script loads the image into the
scene (Slicer's volume and DICOM readers), runs the DiscAnalysis module logic exactly as the GUI does
(Segment, then Quantify and grade on that segmentation, each through ``DiscAnalysisLogic.runInProcess``),
saves ``<out>/<case>.mrb`` (open it in Slicer: the Disc Analysis module comes back with its inputs,
segmentation and results table) and rewrites ``<out>/all_cases.csv`` with the rows of every case processed so
far (one row per disc level, a ``case`` column first). A case that fails becomes one row with ``status`` =
failed and the reason; the others still run. Exit code: 0 all cases done, 1 some failed, 2 bad arguments.

``--age-csv``: a CSV with a ``case`` column (the case name: file name without extension, or the folder
name), an ``age`` column in years and an optional ``sex`` column (F/M); used for the population
percentiles of the markers.

Without Slicer, ``discanalysis run`` (one case) and ``discanalysis batch`` (a folder) do the same analysis
from a plain Python environment, writing the tables and reports but no Slicer scenes (see docs/slicer.md).

The helpers above ``main()`` use only the standard library, so they are tested without Slicer
(Testing/module/test_batch_script.py); everything that needs the Slicer application is imported in main().
This file is an example, not part of the extension package.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("DiscAnalysisBatch")

#: Image files Slicer's volume reader and DiscAnalysis both read (lower case; ".nii.gz" before ".gz").
IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")
COMBINED_CSV = "all_cases.csv"
EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2


class BatchInputError(ValueError):
    """Bad arguments or an unusable case; the message says what to change."""


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """Parse the script's arguments; a leading "--" (which ends Slicer's own options) is dropped."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="Slicer --no-main-window --python-script slicer_batch_process_folder.py --",
        description="Segment, quantify and grade every case of a folder; one .mrb scene per case and one combined CSV.",
    )
    parser.add_argument("--cases", required=True, type=Path, help="folder of cases (image files or DICOM folders)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument("--age-csv", type=Path, help="CSV with columns case, age (years), optional sex (F/M)")
    parser.add_argument("--register", action="store_true", help="also register each disc to the atlas")
    parser.add_argument("--overwrite", action="store_true", help="re-process cases whose .mrb already exists")
    args = parser.parse_args(argv)
    if not args.cases.is_dir():
        raise BatchInputError(f"--cases {args.cases} is not a folder. Give the folder that holds the cases.")
    if args.age_csv is not None and not args.age_csv.is_file():
        raise BatchInputError(f"--age-csv {args.age_csv} not found. Check the path, or leave the option out.")
    return args


def caseName(path: Path) -> str:
    """The case name: the file name without its image extension, or the folder name."""
    name = path.name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def safeFileName(name: str) -> str:
    """A case name usable as a file name on every system (other characters become "_")."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "case"


def _isDicomFile(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def discoverCases(folder: Path) -> list[tuple[str, Path]]:
    """(case name, path) for each image file and each folder holding DICOM files directly in ``folder``,
    sorted by name. Hidden entries and other files are ignored; two entries with the same case name are
    refused (their outputs would overwrite each other)."""
    cases = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
            cases.append((caseName(entry), entry))
        elif entry.is_dir() and any(p.is_file() and _isDicomFile(p) for p in entry.iterdir()):
            cases.append((entry.name, entry))
    names = [safeFileName(n) for n, _ in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BatchInputError(
            f"Several entries of {folder} give the same case name: {', '.join(duplicates)}. Rename them so each "
            "case has its own name (e.g. keep either the .nrrd or the .nii.gz)."
        )
    if not cases:
        raise BatchInputError(
            f"No cases in {folder}: expected image files ({', '.join(IMAGE_SUFFIXES)}) or folders of DICOM files."
        )
    return cases


def readCovariates(path: Path | None) -> dict[str, dict]:
    """{case: {"age": float | None, "sex": "F" | "M" | None}} from the --age-csv file ({} without one)."""
    if path is None:
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "case" not in columns or "age" not in columns:
            raise BatchInputError(
                f"{path} needs the columns 'case' and 'age' (and optionally 'sex'); it has: "
                f"{', '.join(reader.fieldnames or []) or 'no header'}."
            )
        covariates = {}
        for line, row in enumerate(reader, start=2):
            case = (row[columns["case"]] or "").strip()
            if not case:
                continue
            ageText = (row[columns["age"]] or "").strip()
            try:
                age = float(ageText) if ageText else None
            except ValueError:
                raise BatchInputError(f"{path} line {line}: age '{ageText}' is not a number of years.") from None
            sex = (row[columns["sex"]] or "").strip().upper()[:1] if "sex" in columns else ""
            if sex not in ("", "F", "M"):
                raise BatchInputError(f"{path} line {line}: sex must be F or M (or empty); got '{row[columns['sex']]}'.")
            covariates[case] = {"age": age, "sex": sex or None}
    return covariates


def caseRows(case: str, rows: list[dict]) -> list[dict]:
    """The case's result rows with ``case`` and ``status`` columns first."""
    return [{"case": case, "status": "done", **row} for row in rows]


def failedRow(case: str, reason: str) -> dict:
    return {"case": case, "status": "failed", "reason": reason}


def writeCombinedCsv(path: Path, rows: list[dict]) -> Path:
    """Write every row to ``path`` (columns: the union, in order of first appearance; missing = empty),
    atomically, so an interrupted batch leaves the previous complete file."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def readCombinedCsv(path: Path) -> list[dict]:
    """Rows of an earlier combined CSV (empty values as None); [] when there is none. Cases skipped because
    their scene exists keep their earlier rows."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def addMissingStorageNodes(scene) -> int:
    """Give every storable node without a storage node its default one, so the .mrb holds its data; returns
    how many were added. Needs only the scene (runs on slicer-core)."""
    added = 0
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
            added += int(node.GetStorageNode() is not None)
    return added


# ------------------------------------------------------------------------------ Slicer application part
def _loadCase(slicer, path: Path):
    """Load one case into the (empty) scene and return its volume node."""
    if path.is_file():
        return slicer.util.loadVolume(str(path))
    from DICOMLib import DICOMUtils

    loadedIds = []
    with DICOMUtils.TemporaryDICOMDatabase() as database:
        DICOMUtils.importDicom(str(path), database)
        for patient in database.patients():
            loadedIds += DICOMUtils.loadPatientByUID(patient)
    volumes = [slicer.mrmlScene.GetNodeByID(i) for i in loadedIds]
    volumes = [n for n in volumes if n is not None and n.IsA("vtkMRMLScalarVolumeNode") and not n.IsA("vtkMRMLLabelMapVolumeNode")]
    if len(volumes) != 1:
        raise BatchInputError(
            f"{path} holds {len(volumes)} image volumes; put exactly one series (the sagittal T2w) in each case folder."
        )
    return volumes[0]


def processCase(slicer, logic, case: str, path: Path, outDir: Path, covariates: dict, register: bool) -> list[dict]:
    slicer.mrmlScene.Clear(0)
    volume = _loadCase(slicer, path)
    volume.SetName(case)
    p = logic.getParameterNode()
    p.inputVolume = volume
    p.outputDirectory = outDir / "work" / safeFileName(case)
    p.age = int(round(covariates.get("age") or 0))
    p.sex = covariates.get("sex") or ""
    p.register = register

    args, segmentationDir = logic.segmentCommand(p)
    logic.runInProcess(args)
    logic.loadSegmentation(p, segmentationDir)
    args, analysisDir = logic.analyseCommand(p)
    logic.runInProcess(args)
    loaded = logic.loadResults(p, analysisDir)

    addMissingStorageNodes(slicer.mrmlScene)
    scenePath = outDir / f"{safeFileName(case)}.mrb"
    if not slicer.util.saveScene(str(scenePath)):
        raise RuntimeError(f"Could not save the scene to {scenePath} (disk full or no write permission?).")
    return loaded.rows


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        args = parseArguments(argv)
        cases = discoverCases(args.cases)
        covariates = readCovariates(args.age_csv)
    except BatchInputError as exc:
        log.error("%s", exc)
        return EXIT_BAD_ARGUMENTS
    args.out.mkdir(parents=True, exist_ok=True)

    import slicer
    from DiscAnalysisModuleLib.dependencies import ensureDependencies

    # Install what the steps need once, without dialogs (there is no main window to show them).
    ensureDependencies(["segment", "analyse"] + (["register"] if args.register else []), interactive=False)
    logic = slicer.util.getModuleLogic("DiscAnalysis")

    combined = args.out / COMBINED_CSV
    previous = readCombinedCsv(combined)
    allRows, failed = [], 0
    for index, (case, path) in enumerate(cases, start=1):
        log.info("[%d/%d] %s (%s)", index, len(cases), case, path)
        scenePath = args.out / f"{safeFileName(case)}.mrb"
        if scenePath.exists() and not args.overwrite:
            log.info("  %s exists: skipped (use --overwrite to process it again)", scenePath)
            allRows += [row for row in previous if row.get("case") == case]
        else:
            try:
                rows = processCase(slicer, logic, case, path, args.out, covariates.get(case, {}), args.register)
                allRows += caseRows(case, rows)
            except Exception as exc:  # one failed case must not stop the batch; the reason goes in the table
                failed += 1
                log.error("  %s failed: %s", case, exc)
                allRows.append(failedRow(case, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        writeCombinedCsv(combined, allRows)
    log.info("Done: %d case(s), %d failed. Table: %s", len(cases), failed, combined)
    return EXIT_SOME_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    code = main(sys.argv[1:])
    try:
        import slicer.util

        slicer.util.exit(code)
    except (ImportError, AttributeError):
        sys.exit(code)
