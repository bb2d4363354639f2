"""Every buildable profile by name: the shipped ``profiles/*.json`` are these builders'
output. Each builder reads its public source through :mod:`dynasim.datasets`
(sha256-checked) and returns a :class:`~dynasim.profiles.profile.Profile`;
``dynasim profiles --build NAME`` writes it, and a test checks each shipped file equals a
fresh build.
"""

from __future__ import annotations

from collections.abc import Callable

from dynasim.profiles import llmservingsim, splitwise, vidur
from dynasim.profiles.distserve import distserve_opt13b_a100
from dynasim.profiles.profile import Profile

BUILDERS: dict[str, Callable[[], Profile]] = {
    "distserve-opt13b-a100": distserve_opt13b_a100,
    **splitwise.builders(),
    vidur.NAME: vidur.build,
    llmservingsim.NAME: llmservingsim.build}
"""Profile name -> zero-argument builder."""
