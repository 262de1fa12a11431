"""Layer 3: a group's key layout, the heartbeat that keeps a member in it, and who is in it."""
