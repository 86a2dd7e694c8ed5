"""Storage backends behind one small protocol: the embedded LRU and Redis."""
