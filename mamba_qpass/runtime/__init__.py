"""Generation: the decode step (eager, or a captured CUDA graph per batch size), sampling, and ``generate``."""
