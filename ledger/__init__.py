"""The asynchronous ledger: the posting worker, reconciliation and bills."""
