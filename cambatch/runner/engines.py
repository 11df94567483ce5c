"""The engines a run executes on, by their `--engine` name (`config.ENGINES`).

The engine named `NAME` is the module `cambatch.runner.NAME_engine`; a new engine is a new module of
that name and its name in `config.ENGINES`, nothing else. Each offers:

- `connected(config)`: a context manager around the whole run (joining a cluster);
- `driver_config(config)`: the config this process builds its own stages from (the model it checks
  the settings with);
- `recorded_device(stages)`: the device the run's settings record;
- `execute(job, stop)`: process `job.todo` (`cambatch.runner.job.Job`) until done or `stop`.

The module is imported only when a run names it: Ray is an optional extra.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType


def engine(name: str) -> ModuleType:
    """The engine module `--engine name` runs on."""
    return import_module(f"{__package__}.{name}_engine")
