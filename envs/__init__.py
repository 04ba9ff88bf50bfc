"""Task-distribution environments, installed as ``metarl.envs``.

Importing this package (``import metarl`` does it) registers every distribution with Gymnasium under
the ``metarl/`` namespace; the horizon H of each is its ``max_episode_steps``.
"""

from gymnasium.envs.registration import register, registry

#: id -> (entry point, horizon H, default kwargs)
TASK_DISTRIBUTIONS = {
    "metarl/Sinusoid-v0": ("metarl.envs.sinusoid:SinusoidEnv", 1, {}),
    "metarl/Navigation2D-v0": ("metarl.envs.navigation:Navigation2DEnv", 100, {}),
    "metarl/HalfCheetahVel-v0": ("metarl.envs.half_cheetah:HalfCheetahVelEnv", 200, {}),
    "metarl/HalfCheetahDir-v0": ("metarl.envs.half_cheetah:HalfCheetahDirEnv", 200, {}),
    "metarl/Bandit-v0": ("metarl.envs.bandit:BanditEnv", 10, {"n_arms": 10, "n_pulls": 10}),
    # PEARL's locomotion suite (Rakelly et al. 2019); H = 200, PEARL's max_path_length
    "metarl/AntDir-v0": ("metarl.envs.ant:AntDirEnv", 200, {}),
    "metarl/AntGoal-v0": ("metarl.envs.ant:AntGoalEnv", 200, {}),
    "metarl/HumanoidDir-v0": ("metarl.envs.humanoid:HumanoidDirEnv", 200, {}),
    "metarl/Walker2DRandParams-v0": ("metarl.envs.walker:Walker2DRandParamsEnv", 200, {}),
    "metarl/TabularMDP-v0": ("metarl.envs.tabular_mdp:TabularMDPEnv", 10, {"n_states": 10, "n_actions": 5}),
    # Meta-World (pip install -e ".[metaworld]"; metaworld is imported only when one is made)
    "metarl/MetaWorldML1-v0": ("metarl.envs.metaworld:MetaWorldEnv", 500, {"benchmark": "ML1"}),
    "metarl/MetaWorldML10-v0": ("metarl.envs.metaworld:MetaWorldEnv", 500, {"benchmark": "ML10"}),
    "metarl/MetaWorldML45-v0": ("metarl.envs.metaworld:MetaWorldEnv", 500, {"benchmark": "ML45"}),
}

for _id, (_entry, _horizon, _kwargs) in TASK_DISTRIBUTIONS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=_horizon, kwargs=_kwargs)
