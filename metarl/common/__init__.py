"""What every layer shares: policies, distributions, returns, baseline, TRPO, checkpoints, logger, seeding,
the task API that envs/ implements, and the generic config machinery. Imports nothing above it."""
