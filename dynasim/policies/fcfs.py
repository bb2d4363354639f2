"""FCFS: vLLM's default ``--scheduling-policy fcfs`` as an inter-program policy."""

from __future__ import annotations

from dynasim.policies.base import Policy


class FCFS(Policy):
    """First come, first served (vLLM's default ``--scheduling-policy fcfs``): arrival
    order, preempted requests back at the head, the last admitted preempted first. All of
    it is :class:`~dynasim.policies.base.Policy`'s behaviour; this class only names it."""

    name = "fcfs"
