"""What a lab job answers the budget: its memory and work as one ``Cost`` (the labs run on the CPU, so the two
memories are the same), and, when that is too much, the largest value of one setting (``knob``) that fits, or a
change in words when none does (``otherwise``)."""
from __future__ import annotations

from typing import ClassVar

from ... import budget
from ...errors import BudgetExceeded
from ...i18n import Text, error
from ...job import Cost, Fits, Job


class LabJob(Job):
    """The base of the labs' settings dataclasses: each says ``need()`` (bytes, multiply-adds), ``what()`` (the
    job in words, for a refusal) and ``otherwise()`` (the offer when no value of ``knob`` fits)."""

    knob: ClassVar[str] = ""       # the setting an offer lowers: "batch_size", "steps", "pool_size"
    lowest: ClassVar[int] = 1      # its smallest value
    offer_key: ClassVar[str] = ""  # Text(offer_key, n=value): the offer in words

    def need(self) -> tuple[int, float]:
        raise NotImplementedError

    def what(self) -> Text:
        raise NotImplementedError

    def otherwise(self) -> Text:
        raise NotImplementedError

    def cost(self, device=None) -> Cost:
        memory, work = self.need()
        return Cost(memory=memory, host=memory, work=work)

    def offers(self, why: str, fits: Fits) -> tuple[list[Text], bool]:
        best = budget.largest(self.lowest, getattr(self, self.knob) - 1, lambda v: fits(**{self.knob: v}))
        return ([Text(self.offer_key, n=best)] if best else []), True

    def refusal(self, why: str, cost: Cost, machine, fits: Text | None) -> Exception:
        fits = fits or budget.fits_text(self.otherwise())
        if why == "memory":
            return error(BudgetExceeded, "budget.lab.memory", what=self.what(), need=budget.show_bytes(cost.host),
                         limit=budget.show_bytes(machine.host), fits=fits)
        return error(BudgetExceeded, "budget.lab.work", what=self.what(), need=budget.show_macs(cost.work),
                     limit=budget.show_macs(machine.work), fits=fits)
