"""metarl: meta-reinforcement learning on gymnasium task distributions.

Importing the package registers every task-distribution environment with gymnasium under the ``metarl/`` namespace.
"""

import metarl_envs as _envs

_envs.register_all()

__version__ = "0.1.0"
