"""Prefect flows: the pipeline (one flow, one task per stage) and the study.

Without a Prefect server, a flow starts a temporary one; on a cold database (a fresh machine)
that took longer than Prefect's 20-s default here and the flow died before any stage
(2026-12-02). The project's default is 90 s, set before prefect is imported (its settings are
read then); a value the user sets wins.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
