"""kopf-facing handlers; each module delegates to pure code."""
