"""Where results go: the `Sink` interface (`sink`), one module per sink (`jsonl_sink`,
`audit_sink`, `webhook_sink` over the outbox and sender in `webhooks`, `kafka_publish`),
the fan-out that writes every batch to each (`fanout`), and Prometheus metrics.

May import `pipeline.contract`, `pipeline.core` and `pipeline.enforcement`; the Kafka sink
also `pipeline.distributed`'s topic names and topic creation, when it is built.
"""
