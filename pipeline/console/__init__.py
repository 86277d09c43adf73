"""The web console (`lockstep console`): cases, decisions and lookups over a run's outputs."""
