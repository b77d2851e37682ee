"""The whole-patient pipeline and the batch runner.

:func:`run_patient`: T2w image -> segmentation (or a given labelmap) -> markers -> Pfirrmann grades ->
relaxometry fits when T2 / T1rho series are given -> atlas registration when asked -> one merged per-level
table (CSV + JSON) and a self-contained HTML report. Every output is written atomically, and
``done.json`` is written last: a case folder holding it is complete.

:func:`run_batch`: many patients from a folder (one case per sub-folder or per image file) or a CSV
(``case_id,image[,labels,age,sex,t2_series,t1rho_series,t2_times_ms,t1rho_times_ms,pixel_spacing_mm]``);
resumable (finished cases are skipped), one failing case never stops the rest, a summary CSV of all cases
and levels and a failure log with reasons. The summary is rebuilt from the case folders every time, so an
interrupted and restarted batch gives the same summary as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import SimpleITK as sitk

from . import __version__, levels
from .errors import DiscAnalysisError, InputError
from .image_io import read_image, rows_to_csv, write_image, write_text
from .progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

DONE_FILE = "done.json"


@dataclass(frozen=True)
class PatientInputs:
    """One patient's inputs. Paths are files or DICOM folders; series are one or more paths each."""

    image: str
    case_id: str = ""
    labels: str | None = None
    age_years: float | None = None
    sex: str | None = None
    t2_series: tuple[str, ...] = ()
    t1rho_series: tuple[str, ...] = ()
    t2_times_ms: tuple[float, ...] | None = None
    t1rho_times_ms: tuple[float, ...] | None = None
    pixel_spacing_mm: float | None = None

    @property
    def name(self) -> str:
        return self.case_id or Path(self.image).name.split(".")[0]


@dataclass(frozen=True)
class PipelineSettings:
    register: bool = False
    #: 2 registers each disc's mid-sagittal slice (validated: mean Dice 0.961, about 1 s per disc); 3 the
    #: whole disc (mean Dice 0.934, about 16 CPU s per disc); None follows the labelmap's dimension.
    register_dim: int | None = 2
    report: bool = True
    tta: bool = True
    synthetic: bool = False


@dataclass(frozen=True)
class PatientResult:
    case_id: str
    out_dir: Path
    rows: tuple[dict, ...]
    files: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    flags: tuple[str, ...] = ()


#: The merged per-level table: (key, header, unit). Markers' full columns stay in markers.csv.
RESULT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("level", "Level", ""),
    ("found", "Segmented", ""),
    ("seg_confidence", "Segmentation confidence", "0-1"),
    ("grade", "Pfirrmann grade", "1-5"),
    ("grade_confidence", "Grade confidence", "0-1"),
    ("grade_group", "Degeneration group", ""),
    ("dh_mm", "Disc height (central 80 %)", "mm"),
    ("dhi", "Disc height index", "ratio"),
    ("dhi_percentile", "DHI percentile", "%"),
    ("hdr", "Height-to-diameter ratio", "ratio"),
    ("hdr_percentile", "HDR percentile", "%"),
    ("delta_si", "Signal intensity difference", "a.u. (CSF = 255)"),
    ("signal_grade", "Signal-based grade", "1-5"),
    ("t2_mean_ms", "T2 mean", "ms"),
    ("t1rho_mean_ms", "T1rho mean", "ms"),
    ("qc", "QC flags", ""),
)


def _num(value):
    """A finite float or None (the merged table never carries NaN or empty strings for numbers)."""
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# ------------------------------------------------------------------------------------------ one patient
def run_patient(
    inputs: PatientInputs,
    out_dir: str | Path,
    settings: PipelineSettings = PipelineSettings(),
    progress: ProgressCallback | Progress | None = None,
) -> PatientResult:
    """Run every step for one patient and write its outputs into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / DONE_FILE).unlink(missing_ok=True)
    prog = Progress.wrap(progress)
    seconds: dict[str, float] = {}
    files: dict[str, str] = {}
    flags: list[str] = []
    image = read_image(inputs.image, pixel_spacing_mm=inputs.pixel_spacing_mm)

    # 1. segmentation (or the user's labelmap, e.g. edited in Segment Editor)
    t0 = time.perf_counter()
    seg_rows: dict[str, dict] = {}
    if inputs.labels:
        labels = read_image(inputs.labels)
        _check_labels(labels, image)
        flags.append("labelmap given by the user (segmentation not run)")
    else:
        from .segmentation import SegmentationSettings, segment_image

        seg = segment_image(
            image, SegmentationSettings(pixel_spacing_mm=inputs.pixel_spacing_mm), progress=prog.sub(0.0, 0.35)
        )
        labels = seg.labels
        seg_rows = {r["level"]: r for r in seg.to_rows()}
        flags.extend(seg.flags)
        files["segmentation_qc"] = str(write_text(json.dumps(seg.to_dict(), indent=2, default=_json_default), out / "segmentation_qc.json"))
    files["labels"] = str(write_image(labels, out / "labels.nrrd"))
    seconds["segment"] = time.perf_counter() - t0

    # 2. relaxometry first, so that per-zone map means can enter the markers
    relax: dict[str, dict[str, float | None]] = {}
    relax_files: dict[str, str] = {}
    for i, (kind, series, times) in enumerate(
        (("t2", inputs.t2_series, inputs.t2_times_ms), ("t1rho", inputs.t1rho_series, inputs.t1rho_times_ms))
    ):
        if not series:
            continue
        t0 = time.perf_counter()
        from .relaxometry import load_series, run_relaxometry, write_outputs

        loaded = load_series(list(series), times, kind=kind)
        result = run_relaxometry(loaded, labels=labels, kind=kind, progress=prog.sub(0.35 + 0.1 * i, 0.45 + 0.1 * i))
        written = write_outputs(result, out / f"relaxometry_{kind}")
        relax_files.update({f"{kind}_{k}": str(v) for k, v in written.items()})
        relax[kind] = {s.level: (_num(s.mean_ms) if s.n_included > 0 else None) for s in result.disc_rows()}
        seconds[f"relaxometry_{kind}"] = time.perf_counter() - t0
    files.update(relax_files)

    # 3. markers
    t0 = time.perf_counter()
    from .markers import MarkerSettings, compute_markers

    prog.report(0.6, "markers")
    markers = compute_markers(image, labels, MarkerSettings(age_years=inputs.age_years, sex=inputs.sex))
    marker_rows = {r["level"]: r for r in markers.rows()}
    files["markers"] = str(_write_markers(markers, out / "markers.csv"))
    seconds["markers"] = time.perf_counter() - t0

    # 4. grading
    t0 = time.perf_counter()
    from .grading import GradingSettings, grade_discs
    from .grading.api import with_level_naming_notes

    graded = grade_discs(image, labels, GradingSettings(tta=settings.tta), progress=prog.sub(0.65, 0.8))
    grades = {g.level: g for g in with_level_naming_notes(graded, flags)}
    files["grades"] = str(write_text(rows_to_csv([g.to_row() for g in grades.values()]), out / "grades.csv"))
    seconds["grade"] = time.perf_counter() - t0

    # 5. registration (optional)
    if settings.register:
        t0 = time.perf_counter()
        from .registration import register_labelmap

        maps = {}
        for kind, name in (("t2", "T2_ms"), ("t1rho", "T1rho_ms")):
            path = out / f"relaxometry_{kind}" / f"{name}.nrrd"
            if path.is_file():
                maps[name] = read_image(path)
        reg = register_labelmap(labels, maps=maps or None, dim=settings.register_dim,
                                out_dir=out / "registration", progress=prog.sub(0.8, 0.9))
        files["registration"] = str(out / "registration")
        for row in getattr(reg, "rows", lambda: [])():
            if row.get("status") not in (None, "ok"):
                flags.append(f"registration {row.get('level')}: {row.get('reason', row.get('status'))}")
        seconds["register"] = time.perf_counter() - t0

    # 6. merged table + report
    rows = tuple(_merge_level(d, seg_rows.get(d), marker_rows.get(d), grades.get(d), relax) for d in levels.DISCS)
    columns = [c[0] for c in RESULT_COLUMNS]
    files["results_csv"] = str(write_text(rows_to_csv(rows, columns), out / "results.csv"))
    units = {k: u for k, _, u in RESULT_COLUMNS}
    summary = {
        "case_id": inputs.name, "discanalysis_version": __version__, "inputs": asdict(inputs),
        "flags": flags, "units": units, "levels": list(rows), "seconds": seconds,
    }
    files["results_json"] = str(write_text(json.dumps(summary, indent=2, default=_json_default), out / "results.json"))
    if settings.report:
        t0 = time.perf_counter()
        prog.report(0.92, "report")
        files["report"] = str(_write_report(inputs, image, labels, rows, flags, out, settings, relax_files))
        seconds["report"] = time.perf_counter() - t0
    write_text(json.dumps({"case_id": inputs.name, "files": files, "seconds": seconds}, indent=2), out / DONE_FILE)
    prog.report(1.0, "done")
    return PatientResult(inputs.name, out, rows, files, seconds, tuple(flags))


def _check_labels(labels: sitk.Image, image: sitk.Image) -> None:
    from .markers.geometry import check_same_grid

    check_same_grid(image, labels, what="labelmap")


def _write_markers(markers, path: Path) -> Path:
    rows = markers.rows()
    write_text(rows_to_csv(rows), path)
    units, desc = markers.units(), markers.descriptions()
    doc = [{"column": k, "unit": units.get(k, ""), "definition": desc.get(k, "")} for k in (rows[0] if rows else {})]
    write_text(rows_to_csv(doc, ["column", "unit", "definition"]), path.with_name(path.stem + ".columns.csv"))
    return path


def _merge_level(level: str, seg: dict | None, mk: dict | None, gr, relax: dict) -> dict:
    qc: list[str] = []
    row: dict = {"level": level}
    if seg is not None:
        row["found"] = bool(seg.get("found"))
        row["seg_confidence"] = _num(seg.get("confidence"))
        if seg.get("flags"):
            qc.append(f"segmentation: {seg['flags']}")
        if not seg.get("found") and seg.get("reason"):
            qc.append(f"segmentation: {seg['reason']}")
    else:
        row["found"] = None
        row["seg_confidence"] = None
    if gr is not None and gr.graded:
        row["grade"] = gr.grade
        row["grade_confidence"] = _num(gr.confidence)
        row["grade_group"] = gr.group
        qc += [f"grade: {q}" for q in gr.qc]
    else:
        row["grade"] = row["grade_confidence"] = row["grade_group"] = None
        if gr is not None:
            qc.append(f"not graded: {gr.reason}")
    for key in ("dh_mm", "dhi", "dhi_percentile", "hdr", "hdr_percentile", "delta_si", "signal_grade"):
        row[key] = _num(mk.get(key)) if mk else None
    if row["signal_grade"] is not None:
        row["signal_grade"] = int(row["signal_grade"])
    if mk:
        if mk.get("status") not in (None, "ok"):
            qc.append(f"markers: {mk.get('reason') or mk.get('status')}")
        for m in ("dhi", "hdr", "delta_si"):
            flag = mk.get(f"{m}_flag")
            if flag in ("low", "high"):
                qc.append(f"{m.upper().replace('DELTA_SI', 'ΔSI')} {flag} against the population normal range (reference group in markers.csv)")
    row["t2_mean_ms"] = relax.get("t2", {}).get(level)
    row["t1rho_mean_ms"] = relax.get("t1rho", {}).get(level)
    row["qc"] = "; ".join(qc)
    return row


def _write_report(inputs, image, labels, rows, flags, out: Path, settings: PipelineSettings, relax_files) -> Path:
    from .report import Column, MapPanel, PatientReport, write_report

    panels = []
    for kind, title in (("t2", "T2 map"), ("t1rho", "T1rho map")):
        path = out / f"relaxometry_{kind}" / ("T2_ms.nrrd" if kind == "t2" else "T1rho_ms.nrrd")
        if path.is_file():
            vmax = 150.0 if kind == "t2" else 250.0
            panels.append(MapPanel(f"{title} (ms)", sitk.ReadImage(str(path)), 0.0, vmax, "ms"))
    details = [("image", str(inputs.image))]
    if inputs.age_years is not None:
        details.append(("age", f"{inputs.age_years:g} y"))
    if inputs.sex:
        details.append(("sex", inputs.sex))
    report = PatientReport(
        inputs.name, image, labels, rows,
        tuple(Column(k, h, u, 3 if u in ("ratio", "0-1") else (0 if k in ("grade", "signal_grade") else 1)) for k, h, u in RESULT_COLUMNS),
        maps=tuple(panels), qc=tuple(flags), details=tuple(details), synthetic=settings.synthetic,
        notes=("Full marker table with units and definitions: markers.csv and markers.columns.csv.",),
    )
    return write_report(report, out / "report.html")


# ------------------------------------------------------------------------------------------------ batch
@dataclass(frozen=True)
class BatchResult:
    out_dir: Path
    done: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    summary_csv: Path
    failures_csv: Path


def discover_cases(source: str | Path) -> list[PatientInputs]:
    """Cases from a CSV or a folder (one case per sub-folder holding one image/DICOM series, or per image file)."""
    src = Path(source)
    if not src.exists():
        raise InputError(f"Cases source not found: {src}.")
    if src.is_file():
        return _cases_from_csv(src)
    cases = []
    for entry in sorted(src.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix.lower() in (".nrrd", ".nii", ".gz", ".mha", ".png", ".bmp", ".dcm"):
            cases.append(PatientInputs(image=str(entry), case_id=entry.name.split(".")[0]))
    if not cases:
        raise InputError(f"No cases found in {src}: expected image files or one folder per case.")
    return cases


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v for v in (value or "").replace(";", " ").split() if v)


def _cases_from_csv(path: Path) -> list[PatientInputs]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise InputError(f"{path} needs a header with at least an 'image' column (and ideally 'case_id').")
        rows = list(reader)
    base = path.parent
    cases, seen = [], set()

    def resolve(p: str) -> str:
        return str(p if os.path.isabs(p) else (base / p))

    for n, r in enumerate(rows, start=2):
        cid = (r.get("case_id") or "").strip() or Path(r["image"]).name.split(".")[0]
        if cid in seen:
            raise InputError(f"{path}, line {n}: case_id '{cid}' appears twice; case ids must be unique.")
        seen.add(cid)
        try:
            age = float(r["age"]) if (r.get("age") or "").strip() else None
            sp = float(r["pixel_spacing_mm"]) if (r.get("pixel_spacing_mm") or "").strip() else None
            t2t = tuple(float(t) for t in _split(r.get("t2_times_ms"))) or None
            t1t = tuple(float(t) for t in _split(r.get("t1rho_times_ms"))) or None
        except ValueError as exc:
            raise InputError(f"{path}, line {n}: a number could not be read ({exc}).") from None
        sex = (r.get("sex") or "").strip().upper() or None
        if sex not in (None, "F", "M"):
            raise InputError(f"{path}, line {n}: sex must be F, M or empty, not '{sex}'.")
        cases.append(PatientInputs(
            image=resolve(r["image"].strip()), case_id=cid,
            labels=resolve(r["labels"].strip()) if (r.get("labels") or "").strip() else None,
            age_years=age, sex=sex,
            t2_series=tuple(resolve(p) for p in _split(r.get("t2_series"))),
            t1rho_series=tuple(resolve(p) for p in _split(r.get("t1rho_series"))),
            t2_times_ms=t2t, t1rho_times_ms=t1t, pixel_spacing_mm=sp,
        ))
    if not cases:
        raise InputError(f"{path} lists no cases.")
    return cases


def _run_case(inputs: PatientInputs, out_dir: str, settings: PipelineSettings) -> tuple[str, str | None]:
    """Worker body: returns (case_id, error message or None). Never raises."""
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001 - torch is optional for the worker's thread setting
        pass
    try:
        run_patient(inputs, out_dir, settings)
        return inputs.name, None
    except DiscAnalysisError as exc:
        return inputs.name, str(exc)
    except Exception as exc:  # noqa: BLE001 - one failing case must never stop the batch
        log.debug("case %s failed:\n%s", inputs.name, traceback.format_exc())
        return inputs.name, f"internal error: {type(exc).__name__}: {exc}"


def run_batch(
    cases: Sequence[PatientInputs],
    out_dir: str | Path,
    settings: PipelineSettings = PipelineSettings(),
    *,
    workers: int = 1,
    progress: ProgressCallback | Progress | None = None,
) -> BatchResult:
    """Process ``cases`` into ``out_dir/<case_id>/``; skip finished cases; collect failures; write summaries."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog = Progress.wrap(progress)
    todo, skipped = [], []
    for c in cases:
        (skipped if (out / c.name / DONE_FILE).is_file() else todo).append(c)
    failed: list[tuple[str, str]] = []
    done: list[str] = []
    total = max(len(todo), 1)
    prog.report(0.0, f"{len(todo)} to do, {len(skipped)} already done")
    if workers <= 1:
        for i, c in enumerate(todo):
            cid, err = _run_case(c, str(out / c.name), settings)
            (failed.append((cid, err)) if err else done.append(cid))
            prog.report((i + 1) / total, f"{cid}: {'failed' if err else 'done'}")
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_run_case, c, str(out / c.name), settings) for c in todo]
            for i, fut in enumerate(as_completed(futures)):
                cid, err = fut.result()
                (failed.append((cid, err)) if err else done.append(cid))
                prog.report((i + 1) / total, f"{cid}: {'failed' if err else 'done'}")
    summary, failures = write_batch_summary(out, [c.name for c in cases], dict(failed))
    return BatchResult(out, tuple(done), tuple(c.name for c in skipped), tuple(failed), summary, failures)


def write_batch_summary(out: Path, case_ids: Sequence[str], errors: dict[str, str]) -> tuple[Path, Path]:
    """summary.csv (one row per case and level, from each finished case's results.json) and failures.csv."""
    rows, failures = [], []
    for cid in sorted(case_ids):
        results = out / cid / "results.json"
        if (out / cid / DONE_FILE).is_file() and results.is_file():
            data = json.loads(results.read_text())
            for r in data["levels"]:
                rows.append({"case_id": cid, **r})
        else:
            failures.append({"case_id": cid, "reason": errors.get(cid, "not finished (interrupted or failed earlier)")})
    cols = ["case_id"] + [c[0] for c in RESULT_COLUMNS]
    summary = write_text(rows_to_csv(rows, cols), out / "summary.csv")
    fails = write_text(rows_to_csv(failures, ["case_id", "reason"]), out / "failures.csv")
    return summary, fails
