"""The runs: the nightly audit (``audit.py``) and the change poll (``changes.py``), the ledger and
the lease they share, the subscription pipeline and its writer, and the process's memory setting."""
