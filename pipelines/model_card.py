"""A registered version's description: a markdown model card a deployer reads on the model page
without opening the code (what it detects, on which data, how well, how to decide, load and serve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.run_page import HEATMAP_FIGURE, artifact_url

ALPHAS = (0.01, 0.05, 0.1)  # the levels a card may recommend, strictest first


@dataclass
class CardFacts:
    """What the card states about one registered version."""

    name: str  # registered model
    version: str
    dataset: str
    cls: str
    seed: int
    data_version: str
    net: str
    input_size: Any
    epochs: int
    protocol: str
    run_id: str | None = None
    heatmaps: bool = False  # the run has the heatmap figure (run_page.HEATMAP_FIGURE)
    objective: str = "fcdd"  # train.objective: fcdd | hsc | ae


METHODS = {"fcdd": "FCDD", "hsc": "HSC (baseline)", "ae": "Autoencoder (baseline)"}


def smallest_alpha(n: int) -> float | None:
    """With n calibration images no p-value is below 1/(n+1): smaller alphas never flag."""
    return 1.0 / (n + 1) if n > 0 else None


def recommended_alpha(n: int) -> float | None:
    """The strictest of 0.01, 0.05, 0.1 this calibration can reach; None without calibration or
    when even 0.1 is out of reach (fewer than 9 images)."""
    low = smallest_alpha(n)
    if low is None:
        return None
    return next((a for a in ALPHAS if a >= low), None)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _decision_lines(metrics: dict[str, Any]) -> list[str]:
    n = int(metrics.get("calibration_n") or 0)
    if not n:
        return [
            "- **Calibration**: none (trained with `evaluation.calibration: 0`): no p-values or masks; "
            "decide with a score threshold (`fcdd predict --threshold`)."
        ]
    low, alpha = smallest_alpha(n), recommended_alpha(n)
    lines = [
        f"- **Calibration**: {n} held-out good images; smallest usable alpha {low:.4f} "
        "(alphas below it never flag an image)."
    ]
    if alpha is None:
        lines.append(
            f"- **Recommended alpha**: none: {n} images cannot reach alpha 0.1; calibrate on more "
            "good images (`evaluation.calibration`)."
        )
        return lines
    far = metrics.get(f"a{alpha:g}_far")
    rate = metrics.get(f"a{alpha:g}_detection_rate")
    measured = (
        f" (test set: false-alarm rate {_fmt(far)}, detection rate {_fmt(rate)})" if far is not None else ""
    )
    lines.append(f"- **Recommended alpha**: {alpha:g}: at most {alpha:.0%} of good parts flagged{measured}.")
    return lines


def model_card(facts: CardFacts, metrics: dict[str, Any]) -> str:
    """The markdown description of one registered version."""
    uri = f"models:/{facts.name}/{facts.version}"
    alpha = recommended_alpha(int(metrics.get("calibration_n") or 0)) or 0.01
    lines = [
        f"{METHODS.get(facts.objective, facts.objective)} anomaly detector for class **{facts.cls}** of the **{facts.dataset}** data: it scores "
        "how anomalous an image is and shows where, as a heatmap.",
        "",
        f"**{facts.name} version {facts.version}**",
        "",
        f"- **Data**: version `{facts.data_version}`; test protocol `{facts.protocol}`",
        f"- **Network**: `{facts.net}`, input {facts.input_size}, {facts.epochs} epochs, seed {facts.seed}",
        f"- **Image AUC**: {_fmt(metrics.get('image_auc'))}; **pixel AUC**: {_fmt(metrics.get('pixel_auc'))}"
        f"; AUPRO {_fmt(metrics.get('aupro'))} (on {metrics.get('n_test', 'n/a')} test images)",
        *_decision_lines(metrics),
    ]
    if facts.run_id:
        lines.append(f"- **Training run**: `{facts.run_id}`")
    lines += [
        "",
        "**Use it**",
        "",
        "```",
        f"fcdd predict path/to/images --model {uri} --alpha {alpha:g} --out predictions",
        f"mlflow models serve -m {uri} --env-manager local --port 5001",
        "```",
        "",
        "Request (`POST /invocations`): "
        '`{"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG or JPEG>"]]}, '
        f'"params": {{"heatmap_format": "npy", "alpha": {alpha:g}}}}}`; '
        "each row answers `score`, `height`, `width`, `heatmap` (and `p_value`, `anomalous` when "
        "calibrated).",
    ]
    if facts.heatmaps and facts.run_id:
        lines += ["", f"![heatmaps of test images]({artifact_url(facts.run_id, HEATMAP_FIGURE)})"]
    return "\n".join(lines) + "\n"
