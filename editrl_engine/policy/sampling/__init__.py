"""The samplers' implementation: which steps are stochastic (windows), solver steps (solvers), rollouts.

Import the public names from editrl_engine.policy.samplers.
"""
