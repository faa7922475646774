"""A wall-clock budget turned into a step count, so the LR schedule still ends at zero."""

from __future__ import annotations


class WallClockBudget:
    """Sets the run's total steps from the measured speed. Re-estimated from the speed since
    the last estimate at 25/50/75/90/95% of the run (so a machine that slows down mid-run still
    lands on the budget); the run ends outright once the budget is spent. The count is saved in
    checkpoints, so a resumed run keeps it."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.marks: set[int] = set()
        self.ref = (0, 0.0)  # (step, elapsed_s) at the last estimate

    def due(self, step: int, total: int, elapsed_s: float) -> bool:
        """Whether to re-estimate now: step 10, a mark, or the budget spent."""
        return step == min(10, total) or step in self.marks or elapsed_s >= self.budget_s

    def total_steps(self, step: int, elapsed_s: float) -> int:
        ref_step, ref_s = self.ref
        if step > ref_step:
            per_step = (elapsed_s - ref_s) / (step - ref_step)
        else:
            per_step = elapsed_s / max(step, 1)
        left = self.budget_s - elapsed_s
        total = step + max(0, int(left / max(per_step, 1e-9)))
        self.ref = (step, elapsed_s)
        self.marks = {m for m in (int(total * f) for f in (0.25, 0.5, 0.75, 0.9, 0.95)) if m > step}
        return total
