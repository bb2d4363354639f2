"""Profiles: what one simulated vLLM replica is (limits, KV cache, step-time form and
coefficients), the step-time forms and their fit, one builder per public source
(DistServe, splitwise, Vidur, LLMServingSim) and the shipped ``*.json`` files they build;
roofline profiles of unmeasured models from a ``config.json`` and a GPU datasheet
(:mod:`~dynasim.profiles.roofline`).
"""

from dynasim.profiles.profile import LIMITS, Profile, load_profile, shipped_profiles

__all__ = ["LIMITS", "Profile", "load_profile", "shipped_profiles"]
