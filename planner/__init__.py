"""The memory planner: will a model fit these GPUs, from its config.json alone. CLI: `python -m planner`."""
