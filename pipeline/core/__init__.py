"""The engine both runtimes share: gate, de-duplication, keyed stages, windows, derived
streams, the embedded engine loop, and settings.

May import `models` and `pipeline.contract`; never a runtime, a server or an output.
"""
