"""The failure drill's case catalogue (see scripts/failure_drill.py); importing it registers
every case in `CASES`."""

from drill_cases import checkpoints, client, config, data, entries, inputs, lease, server  # noqa: F401
from drill_cases.common import CASES  # noqa: F401
