"""The lab: simulated worlds with ground truth, and the scoring of findings against it."""
