"""Workers: the launcher that forks them, the process handle, the ready pool, what an end means."""
