"""Policy optimisation for sequence models: GRPO and its variants (Dr. GRPO, DAPO), RLOO,
PPO with a value head, Kimi k1.5 and REINFORCE with a group baseline.

`losses` holds the objectives as pure functions over token log-probs [B, T], rewards and
response masks, for use in any JAX language-model trainer; `common` the small verifiable-reward
task (two-digit addition, a tiny decoder-only transformer) on which the methods train.
"""
