"""Scheduling policies: the inter-program queue orders (fcfs, lpm, gang, sjf, plas,
priority) and the intra-program knob policies (baseline-even, certaindex, curve, length,
dynasor-cot, ...). One policy object
drives both the simulated engine and the replay client; :func:`make_policy` builds one
from its CLI name, e.g. ``make_policy("sjf+certaindex")``.
"""

from dynasim.policies.base import Policy, WaitingQueue
from dynasim.policies.fcfs import FCFS
from dynasim.policies.gang import Gang
from dynasim.policies.lpm import LPM
from dynasim.policies.plas import PLAS
from dynasim.policies.priority import Priority
from dynasim.policies.registry import INTER, INTRA, make_intra, make_policy
from dynasim.policies.sjf import SJF

__all__ = ["FCFS", "INTER", "INTRA", "LPM", "PLAS", "SJF", "Gang", "Policy", "Priority",
           "WaitingQueue", "make_intra", "make_policy"]
