"""The Dynasor-CoT proxy (``dynasim proxy``): an OpenAI-compatible server in front of vLLM
that probes a reasoning model's chain of thought every T tokens and stops it once its
answers agree (server, per-request session, probe rules, the ``dynasor`` config object).
"""
