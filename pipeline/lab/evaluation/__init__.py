"""Scoring findings against the ground truth of a simulated world (`lockstep evaluate`).

    labels = read_labels(path); findings = read_findings("out/findings.jsonl")
    report = evaluate(labels, findings)          # the rules: pipeline/lab/evaluation/score.py
    render_table(report, Console()); Path("report.json").write_bytes(report.to_json())

`perfect_findings(labels)` gives the findings a perfect detector would emit; they score
100%, which checks that a labels file and the scoring agree. The picture is
`pipeline.lab.evaluation.plot.plot(labels, findings, "events.jsonl", "evaluation.png")`,
imported on its own: it loads matplotlib, which scoring does not need.
"""

from pipeline.lab.evaluation.inputs import read_findings
from pipeline.lab.evaluation.perfect import perfect_findings
from pipeline.lab.evaluation.report import render_table
from pipeline.lab.evaluation.score import (
    CampaignKindScore,
    CampaignScore,
    NegativeKindScore,
    NegativeScore,
    Report,
    Summary,
    evaluate,
)

__all__ = [
    "CampaignKindScore",
    "CampaignScore",
    "NegativeKindScore",
    "NegativeScore",
    "Report",
    "Summary",
    "evaluate",
    "perfect_findings",
    "read_findings",
    "render_table",
]
