"""Training: the loop, one guarded step, schedules, guards, DDP, metrics and the run directory."""
