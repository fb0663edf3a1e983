"""Online deep-RL algorithms: one file of pure functions per algorithm."""
