"""Layer 2: the store contract (the data, transactions and the :class:`LeaseStore`
protocol), the in-process :class:`MemoryStore`, and the one resilient watch."""
