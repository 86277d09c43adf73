"""Where results go: the `Sink` interface, its implementations (JSON lines files, the
audit trail, webhooks, Kafka topics), the fan-out over them, and Prometheus metrics.

May import `pipeline.contract`, `pipeline.core` and `pipeline.enforcement`.
"""
