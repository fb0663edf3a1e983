"""Tabular algorithms of the Bellman / value-iteration / Monte Carlo / TD chapters."""
