"""The failure drill's case catalogue (see scripts/failure_drill.py); importing it registers
every case in `CASES`."""

from drill_cases import (  # noqa: F401
    checkpoints,
    client,
    config,
    data,
    data_values,
    entries,
    inputs,
    lease,
    server,
)
from drill_cases.common import CASES  # noqa: F401
