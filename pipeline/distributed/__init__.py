"""The distributed runtime: the stages as Faust workers on Kafka (`lockstep worker`),
their topics and partitioner, the ingest loop, `lockstep produce` and `lockstep sink`.

Faust and aiokafka are imported here and nowhere else in `pipeline`, except the Kafka
publish sink in `pipeline.outputs`.
"""
