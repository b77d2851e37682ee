"""Demo step: grade the synthetic phantom's discs and write the grades table.

The phantom is synthetic (its "grades" are drawn to resemble Pfirrmann's description), so this step
shows the pipeline working end to end; agreement with the phantom's grades is printed, not claimed.
"""

from __future__ import annotations

from ..progress import Progress


def grading_demo_step(ctx, progress: Progress) -> list[str]:

    from ..image_io import write_csv
    from .api import grade_discs

    ph = ctx.phantom
    results = grade_discs(ph.t2w, ph.labels, progress=progress)
    rows = [r.to_row() for r in results]
    out = write_csv(rows, ctx.out_dir / "grades" / "grades.csv")
    ctx.paths["grades"] = out
    lines = [f"Pfirrmann grades written to {out} (CNN trained on real L3-S1 discs; the phantom is synthetic):"]
    for r in results:
        truth = getattr(ph, "grades", {}).get(r.level)
        if r.graded:
            lines.append(f"  {r.level}: grade {r.grade} ({r.group}, confidence {r.confidence:.2f}); phantom grade {truth}")
        else:
            lines.append(f"  {r.level}: not graded ({r.reason})")
    return lines
