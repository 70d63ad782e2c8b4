"""What one reconcile does, per kind of key the reconciler (`reconciler.py`) hands out.

`gateway.py`: snapshot → translate → render → apply the gateway's children → statuses of the
gateway and its routes; `backend.py`: a backend's status alone; `statuses.py`: writing status
documents (computed by `routeway.status`) and the Events their transitions deserve. kopf's
handlers (`main.py`) never call these directly: they only mark keys dirty.
"""
