"""Register every disc of a labelmap to the atlas, in parallel worker processes, and write the results.

Per disc: cut the disc (label 120..124) with a margin out of the labelmap, register it to that level's
atlas disc, and warp the images (linear), relaxation maps (linear or B-spline) and the labelmap
(nearest neighbour) onto the atlas disc grid. A disc that cannot be registered (missing, touching the
image edge, dimension mismatch with the atlas, failed registration) becomes a report row with the
reason while the other discs go on.

Workers come from a fork server that has loaded itk-elastix once (``multiprocessing`` "forkserver" start
method with ``_preload`` as its preload module): a new worker is a fork of that server, so it starts in
milliseconds with elastix already loaded instead of paying the load itself (what spawned workers
did; ~1 s with the lean binding of ``elastix.py``, 15-20 s with the full itk package). The fork server
has imported itk but never run an ITK filter, so no ITK/TBB thread pool
exists when it forks (ITK's default threader is TBB, whose scheduler does not survive a fork; the
parent process, which may have run filters, is never forked). The server lives as long as the
process, so every later pool starts warm. Each worker sets ITK's (and SimpleITK's) global thread count
(ITKElastix issue 160). Where "forkserver" does not exist (Windows) workers are spawned and load elastix
themselves.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from .. import image_io, levels
from ..errors import InputError
from ..progress import Progress, ProgressCallback
from . import elastix
from .atlas import DiscAtlas, load_atlas
from .disc import DiscTransform, RegistrationSettings, register_disc, to_atlas
from .geometry import DiscSkipped, crop_disc, crop_like, midsagittal_slice

log = logging.getLogger(__name__)

REPORT_COLUMNS = ("level", "status", "reason", "dim", "dice", "jacobian_mean", "jacobian_sd",
                  "folding_fraction", "inverse_error_mm", "seconds", "cpu_seconds", "patient_voxels", "slice_index")


@dataclass(frozen=True)
class DiscRegistration:
    """One disc's outcome: ``status`` is "ok", "skipped" (bad input, see ``reason``) or "failed"."""

    level: str
    status: str
    reason: str = ""
    dim: int = 0
    transform: DiscTransform | None = None
    registered: dict = field(default_factory=dict)  # name -> image on the atlas disc grid
    patient_voxels: int | None = None
    slice_index: int | None = None  # 2D from 3D: the sagittal slice used (index in the PIR-reoriented volume)
    # per map/image: distance between its values inside the patient disc and inside the atlas disc after
    # registration (histogram preservation, as checked in the paper): {"wasserstein": .., "ks": ..}
    distribution: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_row(self) -> dict:
        row = {"level": self.level, "status": self.status, "reason": self.reason, "dim": self.dim,
               "patient_voxels": self.patient_voxels, "slice_index": self.slice_index}
        metrics = self.transform.metrics_row() if self.transform is not None else {}
        for key in ("dice", "jacobian_mean", "jacobian_sd", "folding_fraction", "inverse_error_mm", "seconds",
                    "cpu_seconds"):
            row[key] = metrics.get(key)
        out = {k: row[k] for k in REPORT_COLUMNS}
        for name, dist in self.distribution.items():
            out[f"{name}_wasserstein"] = round(dist["wasserstein"], 4)
            out[f"{name}_ks"] = round(dist["ks"], 4)
        return out


class RegistrationResults(list):
    """The per-disc outcomes of :func:`register_labelmap` (a list of :class:`DiscRegistration`, level order)."""

    def rows(self) -> list[dict]:
        """One report row per disc (what ``registration_report.csv`` holds)."""
        return [r.to_row() for r in self]


@dataclass(frozen=True)
class _Job:
    level: str
    atlas_mask: sitk.Image
    patient_mask: sitk.Image
    labels: sitk.Image
    images: dict
    maps: dict
    settings: RegistrationSettings
    map_interpolator: str
    dim: int
    patient_voxels: int
    slice_index: int | None


def _init_worker(threads: int) -> None:
    elastix.warm_up(threads, worker=True)


def _run_job(job: _Job) -> DiscRegistration:
    try:
        tx = register_disc(job.atlas_mask, job.patient_mask, job.settings, job.level)
        reg = {"labels": to_atlas(tx, job.labels, "nearest")}
        for name, img in job.images.items():
            reg[name] = to_atlas(tx, img, "linear")
        for name, img in job.maps.items():
            reg[name] = to_atlas(tx, img, job.map_interpolator)
        reg["jacobian"] = tx.jacobian
        dist = {name: value_distribution_distance(tx, img, reg[name])
                for name, img in {**job.images, **job.maps}.items()}
        return DiscRegistration(job.level, "ok", "", job.dim, tx, reg, job.patient_voxels, job.slice_index, dist)
    except DiscSkipped as exc:
        return DiscRegistration(job.level, "skipped", str(exc), job.dim, patient_voxels=job.patient_voxels)
    except Exception as exc:  # noqa: BLE001 - one disc's failure must not stop the others; reported
        log.exception("registration of %s failed", job.level)
        return DiscRegistration(job.level, "failed", f"registration failed: {type(exc).__name__}: {exc}", job.dim,
                                patient_voxels=job.patient_voxels)


def value_distribution_distance(tx: DiscTransform, patient_image: sitk.Image, atlas_image: sitk.Image) -> dict:
    """Wasserstein-1 distance (image units) and Kolmogorov-Smirnov statistic between the values inside
    the patient disc (before registration) and inside the atlas disc (after)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    before_img = sitk.Resample(patient_image, tx.patient_grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32)
    before = sitk.GetArrayViewFromImage(before_img)[sitk.GetArrayViewFromImage(tx.patient_grid) > 0]
    after = sitk.GetArrayViewFromImage(atlas_image)[sitk.GetArrayViewFromImage(tx.atlas_grid) > 0]
    return {"wasserstein": float(wasserstein_distance(before, after)),
            "ks": float(ks_2samp(before, after).statistic)}


def _prepare(level: str, labelmap: sitk.Image, images: dict, maps: dict, atlas: DiscAtlas, dim: int,
             settings: RegistrationSettings, map_interpolator: str) -> _Job | DiscRegistration:
    label = levels.label_of(level)
    try:
        if atlas.dim != dim:
            raise DiscSkipped(f"dimension mismatch: the atlas is {atlas.dim}D but {dim}D registration was asked for")
        if level not in atlas.masks:
            raise DiscSkipped("the atlas has no disc for this level")
        slice_index = None
        lab, imgs, mps = labelmap, images, maps
        if dim == 3 and (labelmap.GetDimension() == 2 or min(labelmap.GetSize()) < 3):
            raise DiscSkipped(
                "dimension mismatch: the atlas is 3D but the labelmap is 2D (or has fewer than 3 slices); "
                "register in 2D (--dim 2)"
            )
        if dim == 2 and labelmap.GetDimension() == 3:
            lab, both, slice_index = midsagittal_slice(labelmap, label, {**{f"i:{k}": v for k, v in images.items()},
                                                                        **{f"m:{k}": v for k, v in maps.items()}})
            imgs = {k[2:]: v for k, v in both.items() if k.startswith("i:")}
            mps = {k[2:]: v for k, v in both.items() if k.startswith("m:")}
        crop = crop_disc(lab, level, label, settings.margin_mm)
        # patient data is cut with twice the margin: the warp samples around the disc, not only inside it
        imgs = {k: crop_like(v, crop.mask, settings.margin_mm) for k, v in imgs.items()}
        mps = {k: crop_like(v, crop.mask, settings.margin_mm) for k, v in mps.items()}
        labels_crop = sitk.Resample(lab, crop_like(lab, crop.mask, settings.margin_mm), sitk.Transform(),
                                    sitk.sitkNearestNeighbor, 0, lab.GetPixelID())
        return _Job(level, atlas.masks[level], crop.mask, labels_crop, imgs, mps, settings, map_interpolator,
                    dim, crop.n_voxels, slice_index)
    except DiscSkipped as exc:
        return DiscRegistration(level, "skipped", str(exc), dim)


def register_labelmap(labelmap: sitk.Image, *, images: dict | None = None, maps: dict | None = None,
                      settings: RegistrationSettings | None = None, dim: int | None = None,
                      atlas: DiscAtlas | None = None, workers: int = 1, map_interpolator: str = "linear",
                      progress: ProgressCallback | Progress | None = None,
                      executor: cf.Executor | None = None,
                      out_dir: str | Path | None = None) -> RegistrationResults:
    """Register every lumbar disc of ``labelmap`` (SPINEPS labels 120..124) to the atlas.

    ``images`` (e.g. T2w echoes) and ``maps`` (T2/T1rho maps) are {name: image} in the labelmap's
    physical space; they come back on each disc's atlas grid in ``DiscRegistration.registered``, with
    the warped labelmap ("labels", nearest neighbour) and the Jacobian determinant ("jacobian").
    ``dim`` defaults to the labelmap's dimension; ``dim=2`` on a 3D labelmap registers each disc's
    mid-sagittal slice. Returns one row per atlas level, in level order; never raises for one bad disc.

    ``workers > 1`` registers discs in that many worker processes (:func:`worker_pool`: forked from a
    server that loads elastix once per process, so only the first call pays that load); ``workers=1``
    registers in this process. Batch runs can also pass their own ``executor`` (``workers`` is then
    ignored). With ``out_dir`` the results are also written there (:func:`write_registration`).
    """
    images, maps = dict(images or {}), dict(maps or {})
    s = settings or RegistrationSettings()
    dim = dim or labelmap.GetDimension()
    if dim not in (2, 3):
        raise InputError(f"Registration dimension must be 2 or 3, not {dim}.")
    if map_interpolator not in ("linear", "bspline"):
        raise InputError(f"Map interpolator must be 'linear' or 'bspline', not '{map_interpolator}'.")
    if atlas is None:
        atlas = load_atlas(dim) if dim in (2, 3) else None
    prog = Progress.wrap(progress)
    if executor is None and workers > 1:
        worker_context()  # start the workers' fork server now: its elastix load overlaps the preparation
    disc_levels = atlas.levels if atlas.levels else levels.DISCS
    prepared = [_prepare(lv, labelmap, images, maps, atlas, dim, s, map_interpolator) for lv in disc_levels]
    jobs = [p for p in prepared if isinstance(p, _Job)]
    results: dict[str, DiscRegistration] = {p.level: p for p in prepared if isinstance(p, DiscRegistration)}
    done = 0
    prog.report(0.0, f"registering {len(jobs)} discs")
    if executor is None and (workers <= 1 or len(jobs) <= 1):
        elastix.set_global_threads(s.threads)
        for job in jobs:
            results[job.level] = _run_job(job)
            done += 1
            prog.report(done / max(len(jobs), 1), f"registered {job.level}")
    else:
        own = executor is None
        pool = worker_pool(min(workers, len(jobs)), s.threads) if own else executor
        futures = {pool.submit(_run_job, job): job for job in jobs}
        try:
            for fut in cf.as_completed(futures):
                job = futures[fut]
                try:
                    results[job.level] = fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker: report, continue
                    results[job.level] = DiscRegistration(job.level, "failed",
                                                          f"worker failed: {type(exc).__name__}: {exc}", dim)
                done += 1
                prog.report(done / len(jobs), f"registered {job.level}")
        except BaseException:  # cancelled (or interrupted): drop the discs not started yet
            for fut in futures:
                fut.cancel()
            raise
        finally:
            if own:
                pool.shutdown(wait=True, cancel_futures=True)
    out = RegistrationResults(results[lv] for lv in disc_levels)
    if out_dir is not None:
        write_registration(out, out_dir)
    return out


PRELOAD_MODULE = "DiscAnalysisLib.registration._preload"


_SERVER_LOCK = threading.Lock()


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for registration workers: a fork server that preloads elastix.

    Starts the server now (its elastix load then overlaps the caller's own work). The preload list is
    set only if this process's fork server has not started yet: a server started earlier by other code
    keeps its list, and its workers then load elastix themselves (slower, still correct).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the object set_forkserver_preload configures
    with _SERVER_LOCK:
        if getattr(server, "_forkserver_pid", None) is None:
            preload = [m for m in getattr(server, "_preload_modules", []) if m != "__main__"]
            ctx.set_forkserver_preload(sorted(set(preload) | {PRELOAD_MODULE}))
            # Python 3.11's fork server ignores the sys.path it is given, so it could preload another copy
            # of DiscAnalysisLib than the one running here (or none, e.g. in Slicer, whose module paths are
            # not in the environment): hand it over as PYTHONPATH for the start only
            old = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
            try:
                forkserver.ensure_running()
            finally:
                if old is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = old
    return ctx


def worker_pool(workers: int, threads: int = 1) -> cf.ProcessPoolExecutor:
    """A pool of worker processes for :func:`register_labelmap` (``executor=``), forked from a server
    that has loaded elastix (see the module docstring); each sets ITK's global thread count to ``threads``.

    The first pool of a process waits for the server's one-off elastix load; later pools start in
    milliseconds. Batch scripts can keep one pool for all subjects and pass it as ``executor=``.
    """
    return cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=worker_context(),
                                  initializer=_init_worker, initargs=(threads,))


def report_csv(results: list[DiscRegistration]) -> str:
    rows = [r.to_row() for r in results]
    columns = list(REPORT_COLUMNS) + sorted({k for row in rows for k in row} - set(REPORT_COLUMNS))
    return image_io.rows_to_csv(rows, columns)


def write_transform(transform: sitk.Transform, path: str | Path) -> Path:
    """Write an ITK transform file (.h5/.tfm) atomically."""
    path = Path(path)
    with image_io.atomic_path(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return path


def write_registration(results: list[DiscRegistration], out_dir: str | Path) -> dict[str, Path]:
    """Write per-disc outputs and ``registration_report.csv`` into ``out_dir`` (all writes atomic).

    Per registered disc, in ``<out>/<level>/``: ``atlas_to_patient.h5`` (ITK resampling transform taking
    atlas-grid points to patient points: resample patient data with it onto the atlas grid),
    ``patient_to_atlas.h5`` (its inverse, for bringing atlas-space results back), ``atlas_mask.nrrd``,
    and every registered image ``<name>.nrrd`` (labels, images, maps, jacobian) on the atlas disc grid.
    """
    out = Path(out_dir)
    written: dict[str, Path] = {}
    for r in results:
        if not r.ok:
            continue
        d = out / r.level
        written[f"{r.level}/atlas_to_patient"] = write_transform(r.transform.forward, d / "atlas_to_patient.h5")
        written[f"{r.level}/patient_to_atlas"] = write_transform(r.transform.inverse, d / "patient_to_atlas.h5")
        written[f"{r.level}/atlas_mask"] = image_io.write_image(r.transform.atlas_grid, d / "atlas_mask.nrrd")
        for name, img in r.registered.items():
            written[f"{r.level}/{name}"] = image_io.write_image(img, d / f"{_safe(name)}.nrrd")
    written["report"] = image_io.write_text(report_csv(results), out / "registration_report.csv")
    return written


def _safe(name: str) -> str:
    keep = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name)
    return keep or "image"


def summary(results: list[DiscRegistration]) -> str:
    ok = [r for r in results if r.ok]
    parts = [f"{len(ok)}/{len(results)} discs registered"]
    if ok:
        parts.append("Dice " + ", ".join(f"{r.level} {r.transform.dice:.3f}" for r in ok))
        parts.append(f"max folding {max(r.transform.folding_fraction for r in ok):.4f}")
    for r in results:
        if not r.ok:
            parts.append(f"{r.level}: {r.status} ({r.reason})")
    return "; ".join(parts)

