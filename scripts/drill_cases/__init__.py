"""The failure drill's case catalogue (see scripts/failure_drill.py); importing it registers
every case in `CASES`."""

from drill_cases import checkpoints, config, data, server  # noqa: F401
from drill_cases.common import CASES  # noqa: F401
