"""The failure drill (issues 31 and 40): its case catalogue, one module per kind of hostile
input, and the runner (`runner`) that runs each case in a fresh subprocess (`child`) and
classifies what happened. scripts/failure_drill.py is its command line; tests import it here
(tests/test_failure_drill.py runs a few cases). Importing the package registers every case in
`CASES`; the case modules import the project lazily, so listing the cases stays fast."""

from tests.drill import (  # noqa: F401
    checkpoints,
    client,
    config,
    data,
    data_values,
    entries,
    inputs,
    lease,
    octo_surfaces,
    server,
)
from tests.drill.common import CASES  # noqa: F401
