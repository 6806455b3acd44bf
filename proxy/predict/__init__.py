"""Model-driven routing support: live accuracy, decision budget, feature assembly, model reload."""
