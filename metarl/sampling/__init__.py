"""Experience collection: vector envs, the batched Collector, its Ray and process-pool backends, task-in-observation envs.

It knows task distributions (metarl.envs) and metarl.common, never which algorithm asked.
"""
