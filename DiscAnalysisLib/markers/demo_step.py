"""Demo step: markers on the synthetic phantom, checked against its construction geometry."""

from __future__ import annotations

from ..progress import Progress


def _f(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markers_demo_step(ctx, progress: Progress) -> list[str]:
    """Compute the markers table on the phantom, write it, and compare heights and tilts with the truth.

    The phantom's discs are biconvex, so the truth is the construction height at the disc centre
    (``disc_height_mm``), which our ``center_height_mm`` measures; ``dh_mm`` (the mean over the central
    80 %) is smaller by the convexity. Tilts are compared with ``disc_tilt_deg``.
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
    worst = 0.0
    for m in report.levels:
        truth = ph.disc_height_mm.get(m.level)
        if m.center_height_mm is None or truth is None:
            lines.append(f"  {m.level}: {m.status} ({m.reason})")
            continue
        err = 100.0 * (m.center_height_mm - truth) / truth
        worst = max(worst, abs(err))
        tilt = ph.disc_tilt_deg.get(m.level)
        lines.append(
            f"  {m.level}: centre height {m.center_height_mm:.2f} mm (truth {truth:.2f}, {err:+.1f} %), "
            f"DH(central 80 %) {_f(m.dh_mm, '.2f')} mm, DHI {_f(m.dhi, '.3f')}, tilt {m.ap_tilt_deg:+.1f} deg "
            f"(truth {_f(tilt, '+.1f')}), ΔSI {_f(m.delta_si, '.0f')} -> signal grade {m.signal_grade} "
            f"(phantom grade {ph.grades.get(m.level)})"
        )
    lines.append(f"  largest centre-height error: {worst:.1f} %")
    return lines
