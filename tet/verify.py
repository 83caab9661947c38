"""Health check and in-place repair of ``.tet`` files (cli.md §2 and §3).

`verify` runs the check sequence of cli.md §2 and returns a `Report`; it never
prints and never raises for a bad file (a file that does not parse is a report
with ``ok=False``).  Only problems outside the file's bytes raise: a missing file,
a directory, a FIFO or device (refused at once, never read), no permission, as
`TetOSError` subclasses (`TetFileNotFoundError` is a `FileNotFoundError`, …).
Temp files beside the file that writers which are gone left behind are a warning
(``stale_temp_files``).

`repair` applies the in-place fixes: ``footer_invalid`` cuts the file after its
chunk payloads and clears the history-footer flag, or, when a sound tile checksum
table lies after the payloads, keeps the table and writes a minimal footer naming it
(so ``verify --deep`` still sees a damaged tile after the repair); the repaired image
is built beside the file and renamed over it, so the original is never left
half-written;
``stale_temp_files`` removes those temp files.

The checks live in `tet.verify_checks`, the repairs in `tet.repair` and the report
types in `tet.verify_report`; this module is the one users import.
"""

from __future__ import annotations

from tet.repair import REPAIRABLE_CODES as REPAIRABLE_CODES
from tet.repair import SKIPPED_MESSAGE as SKIPPED_MESSAGE
from tet.repair import footer_payload_end as footer_payload_end
from tet.repair import footer_table as footer_table
from tet.repair import repair as repair
from tet.repair import repair_plan as repair_plan
from tet.verify_checks import DECODE_LIMIT as DECODE_LIMIT
from tet.verify_checks import NO_TABLE as NO_TABLE
from tet.verify_checks import STALE_LISTED as STALE_LISTED
from tet.verify_checks import Progress as Progress
from tet.verify_checks import verify as verify
from tet.verify_report import Finding as Finding
from tet.verify_report import PlanAction as PlanAction
from tet.verify_report import Recommendation as Recommendation
from tet.verify_report import RepairAction as RepairAction
from tet.verify_report import RepairPlan as RepairPlan
from tet.verify_report import RepairReport as RepairReport
from tet.verify_report import Report as Report
from tet.verify_report import repair_command as repair_command

__all__ = [
    "DECODE_LIMIT",
    "REPAIRABLE_CODES",
    "Finding",
    "PlanAction",
    "Progress",
    "Recommendation",
    "RepairAction",
    "RepairPlan",
    "RepairReport",
    "Report",
    "footer_payload_end",
    "footer_table",
    "repair",
    "repair_command",
    "repair_plan",
    "verify",
]
