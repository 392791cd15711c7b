"""The project config: its model, and loading it from TOML, YAML or JSON."""

from overture.config.dotenv import read_env_file
from overture.config.load import find_config, load_project
from overture.config.model import Project, Service

__all__ = ["Project", "Service", "find_config", "load_project", "read_env_file"]
