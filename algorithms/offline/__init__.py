"""Offline RL: one file per algorithm (BC, TD3+BC, AWAC, CQL, IQL, SAC-N, EDAC); the task,
batches, the gradient-step scan and acting they share are in common.py."""
