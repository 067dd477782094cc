"""fedrec: simulate federated and device-cloud collaborative recommenders on Flower."""

from fedrec.errors import ConfigError, DataError, FedrecError

__all__ = ["ConfigError", "DataError", "FedrecError"]
__version__ = "0.1.0"
