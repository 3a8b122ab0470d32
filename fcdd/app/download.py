"""The page's download: scores.csv and defect masks of one model at one alpha, as ``fcdd predict``
writes them (same columns, same mask names and pixels), plus failures.csv for files that failed."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from fcdd.app.catalog import LoadedModel
from fcdd.app.jobs import Job, ModelRun
from fcdd.app.scorer import read_map
from fcdd.decisions import decide
from fcdd.overlay import mask_png_bytes
from fcdd.predict import CalibratedDecisions


def write_zip(job: Job, run: ModelRun, model: LoadedModel, alpha: float | None, out: Path) -> Path:
    """One pass over the job's images, one map in memory at a time."""
    cal = model.calibration
    q = float(model.card["quantile"])
    fields = ["path", "score"] + (list(CalibratedDecisions.fields) if cal else [])
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
            if cal:  # as fcdd.predict.CalibratedDecisions: the same columns, mask pixels and notes
                up = read_map(job, run, item.index)
                (d,) = decide(cal, [result.score], [up], [item.size], alpha, q)
                row |= {
                    "p_value": d.p_value,
                    "normalised_score": d.normalised_score,
                    "anomalous": d.anomalous,
                }
                row["mask"] = row["mask_note"] = ""
                if d.rule is not None:
                    row["mask"] = f"{row_index:04d}_{Path(item.name).stem}_mask.png"
                    row["mask_note"] = d.rule.note
                    z.writestr(row["mask"], mask_png_bytes(up, item.size, d.rule))
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
