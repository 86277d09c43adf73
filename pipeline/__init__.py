"""Lockstep's runtime: sources, the event contract, event time, keyed stages, sinks and CLI."""
