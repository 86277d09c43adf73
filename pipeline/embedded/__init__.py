"""The embedded runtime: one process, no broker (`lockstep replay`, `lockstep run`, the demo)."""
