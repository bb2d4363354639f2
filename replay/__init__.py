"""Live replay: the same traces, programs and policies as the simulator, run against
OpenAI-compatible servers (vLLM) with the results journaled as they arrive
(:mod:`~replay.dispatcher`, :mod:`~replay.client`, :mod:`~replay.journal`), then compared
with the simulation (:mod:`~replay.compare`, :mod:`~replay.fidelity`).
"""
