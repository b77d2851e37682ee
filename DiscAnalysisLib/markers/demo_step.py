"""Demo step: markers on the synthetic phantom, checked against its construction geometry."""

from __future__ import annotations

from ..progress import Progress


def _central80_factor() -> float:
    """Mean over |r| <= 0.8 of the phantom's disc thickness profile, as a fraction of its centre height."""
    import numpy as np

    r = np.linspace(0.0, 0.8, 8001)
    profile = (1.0 + 0.1 * (1.0 - r**2)) * np.sqrt(1.0 - r**10) / 1.1
    return float(np.trapezoid(profile, r) / 0.8) if hasattr(np, "trapezoid") else float(np.trapz(profile, r) / 0.8)


def _f(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markers_demo_step(ctx, progress: Progress) -> list[str]:
    """Compute the markers table on the phantom, write it, and compare heights and tilts with the truth.

    The phantom's discs are biconvex: ``disc_height_mm`` is the construction height ``h`` at the disc
    centre, which ``center_height_mm`` measures (mean over the central 10 %). ``dh_mm`` is the mean
    over the central 80 % of the AP diameter; for the phantom's mid-sagittal half-thickness profile
    ``(h / 2.2) (1 + 0.1 (1 - r^2)) sqrt(1 - r^10)`` (``r``: normalised AP position, see phantom.py) that
    mean is ``h`` times :func:`_central80_factor`, the truth we compare ``dh_mm`` with. Tilts are compared
    with ``disc_tilt_deg``.
    """
    from ..cli.markers import docs_to_csv, rows_to_csv, sidecar_path
    from ..image_io import write_text
    from . import MarkerSettings, compute_markers

    ph = ctx.phantom
    report = compute_markers(ph.t2w, ph.labels, MarkerSettings(age_years=45, sex="F"),
                             maps={"t2_ms": ph.t2_ms}, progress=progress)
    out = ctx.out_dir / "markers" / "markers.csv"
    write_text(rows_to_csv(report.rows()), out)
    write_text(docs_to_csv(report.column_docs()), sidecar_path(out))
    ctx.paths["markers"] = out
    lines = [f"markers written to {out} (+ {sidecar_path(out).name}); phantom truth vs measured:"]
    worst = worst_dh = 0.0
    k80 = _central80_factor()
    for m in report.levels:
        truth = ph.disc_height_mm.get(m.level)
        if m.center_height_mm is None or truth is None:
            lines.append(f"  {m.level}: {m.status} ({m.reason})")
            continue
        err = 100.0 * (m.center_height_mm - truth) / truth
        err_dh = 100.0 * (m.dh_mm - k80 * truth) / (k80 * truth) if m.dh_mm is not None else float("nan")
        worst = max(worst, abs(err))
        worst_dh = max(worst_dh, abs(err_dh))
        tilt = ph.disc_tilt_deg.get(m.level)
        lines.append(
            f"  {m.level}: centre height {m.center_height_mm:.2f} mm (truth {truth:.2f}, {err:+.1f} %), "
            f"DH(central 80 %) {_f(m.dh_mm, '.2f')} mm (truth {k80 * truth:.2f}, {err_dh:+.1f} %), DHI {_f(m.dhi, '.3f')}, tilt {m.ap_tilt_deg:+.1f} deg "
            f"(truth {_f(tilt, '+.1f')}), ΔSI {_f(m.delta_si, '.0f')} -> signal grade {m.signal_grade} "
            f"(phantom grade {ph.grades.get(m.level)})"
        )
    lines.append(f"  largest error: DH {worst_dh:.1f} %, centre height {worst:.1f} %")
    return lines
