"""Online deep-RL algorithms (issue 3): one file of pure functions per algorithm."""
