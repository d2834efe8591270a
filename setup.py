"""Install metarl: the library (`metarl`) and its task-distribution environments (folder `envs/`, imported as
`metarl_envs` so that no other `envs` module can shadow it)."""

from setuptools import find_packages, setup

setup(
    name="metarl",
    version="0.1.0",
    description="Meta-reinforcement learning suite: MAML-TRPO, Reptile, SNAIL on gymnasium/MuJoCo task distributions",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["metarl", "metarl.*"]) + ["metarl_envs"],
    package_dir={"metarl_envs": "envs"},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        "gymnasium[mujoco]>=1.0",
        "mujoco>=3",
        "numpy>=1.24",
        "ray>=2.9",
        "stable-baselines3>=2.3",
        "pyyaml>=6",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scipy>=1.10",  # metarl.eval_results: Student-t confidence intervals
        "pillow>=9",  # metarl.fewshot: Omniglot images (PIL)
        "grpcio>=1.42",  # metarl.sampling.ray_sampler probes a Ray address; core ray does not require grpcio
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.4"],
        # Meta-World ML1/ML10 (metarl_envs.meta_world); metaworld 3.1 pins mujoco==3.3.0, which the suite also runs on
        "metaworld": ["metaworld>=3.1"],
    },
    entry_points={"console_scripts": ["metarl=metarl.cli:main"]},
)
