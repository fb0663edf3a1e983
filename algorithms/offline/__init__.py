"""Offline RL: one file per algorithm (BC, TD3+BC, AWAC, CQL, IQL, SAC-N, EDAC); shared pieces in common.py."""
