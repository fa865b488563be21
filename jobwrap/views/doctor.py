"""``doctor``: one line per finding, each with its fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobwrap.doctor import Finding


def doctor_text(findings: list[Finding]) -> str:
    return "".join(f.line() + "\n" for f in findings)
