"""Scale-out on a Ray cluster: `filter --executor ray` (and `generate --executor ray`).

Ray is an optional extra (`pip install 'cotforge[ray]'`); nothing here imports it at module level.
"""
