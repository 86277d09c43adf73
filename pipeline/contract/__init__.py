"""The event contract (docs/contract.md): events in; findings, actions and dead letters out.

Imports nothing of Lockstep but `pipeline.core.settings` (severity bands); everything else
imports it.
"""
