"""The page's download: scores.csv and defect masks of one model at one alpha, as ``fcdd predict``
writes them (same columns, same mask names and pixels), plus failures.csv for files that failed."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from fcdd import calibration as conformal
from fcdd.app.catalog import LoadedModel
from fcdd.app.jobs import Job, ModelRun
from fcdd.app.scorer import read_map
from fcdd.detector import full_heatmap


def write_zip(job: Job, run: ModelRun, model: LoadedModel, alpha: float | None, out: Path) -> Path:
    """One pass over the job's images, one map in memory at a time."""
    cal = model.calibration
    fields = ["path", "score"] + (["p_value", "normalised_score", "anomalous", "mask"] if cal else [])
    with job.cond:
        done = [(item, run.results.get(item.index)) for item in job.items]
    scores, failures = io.StringIO(), []
    writer = csv.DictWriter(scores, fieldnames=fields, lineterminator="\r\n")
    writer.writeheader()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        row_index = 0
        for item, result in done:
            if item.error or result is None or result.error:
                reason = item.error or (result.error if result else "not scored yet")
                failures.append((item.name, reason))
                continue
            row = {"path": item.name, "score": result.score}
            if cal:
                p = result.p_value
                row |= {
                    "p_value": p,
                    "normalised_score": float(conformal.normalised_score(p)),
                    "anomalous": p <= alpha,
                    "mask": "",
                }
                if row["anomalous"]:
                    heat = full_heatmap(read_map(job, run, item.index), item.size)
                    row["mask"] = f"{row_index:04d}_{Path(item.name).stem}_mask.png"
                    z.writestr(row["mask"], conformal.mask_png(conformal.defect_mask(heat, cal, alpha)))
            writer.writerow(row)
            row_index += 1
        z.writestr("scores.csv", scores.getvalue())
        if failures:
            text = io.StringIO()
            w = csv.writer(text, lineterminator="\r\n")
            w.writerow(["path", "reason"])
            w.writerows(failures)
            z.writestr("failures.csv", text.getvalue())
    return out
