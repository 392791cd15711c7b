"""The demo backend that `overture up` runs: a gateway and its agents."""
