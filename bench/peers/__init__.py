"""Our service against the servers a user would pick instead (BentoML, LitServe), on the same models."""
