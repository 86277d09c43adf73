"""Lockstep's default settings and enforcement policy, shipped as package data.

Installed as the package `lockstep_config` (see pyproject.toml), so a wheel carries them and
`pipeline.core.settings` reads them through `importlib.resources`, wherever it is installed.
"""
