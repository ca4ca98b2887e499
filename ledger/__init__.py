"""The asynchronous ledger (posting worker, reconciliation, bills): see issue 3."""
