"""From findings to Article 19 measures: the policy, the measures, the enforcement
stage and the audit trail (Article 19: keep records).

May import `models`, `pipeline.contract` and `pipeline.core`.
"""
