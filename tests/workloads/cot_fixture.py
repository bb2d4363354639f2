"""A tiny long chain-of-thought folder in the governor_cot_probes layout, for tests."""

from __future__ import annotations

from pathlib import Path

TRAJ_HEADER = ("model,dataset,seed,problem_id,target,tokens_used,finished_naturally,"
               "finish_reason,final_answer,final_correct,prompt_tokens")
PROBE_HEADER = ("problem_id,dataset,model,base_seed,token_position,probe_id,probe_answer,"
                "is_certain,probe_out_tokens,probe_prompt_tokens,probe_latency_seconds")
M = "org/Model-A"

#: (problem, seed, target, tokens, final answer, logged correct, probes as
#: (position, answer, certain, out tokens))
TRAJECTORIES = [
    # agrees from 128 on: w=2 stops at 192 (probes 128, 192 both "\\frac{1}{2}" / "0.5")
    ("1", 0, "1/2", 400, "\\dfrac{1}{2}", True,
     [(64, "3", True, 5), (128, "\\frac{1}{2}", True, 6), (192, "0.5", True, 4),
      (256, "0.5", True, 4), (320, "1/2", True, 4)]),
    # a hesitant probe (192) breaks the run: w=2 stops at 320, wrong answer "7"
    ("2", 0, "8", 500, "8", True,
     [(64, "7", True, 3), (128, "", True, 3), (192, "7", False, 32), (256, "7", True, 3),
      (320, "7", True, 3), (384, "8", True, 3), (448, "8", True, 3)]),
    # ends at 100 tokens; one probe; a probe logged at 128 (past the end) is dropped
    ("3", 0, "(C)", 100, "C", True, [(64, "B", True, 2), (128, "C", True, 2)]),
    # probes far past the end (another generation): the trajectory is excluded
    ("4", 0, "5", 100, "5", True, [(64, "5", True, 2), (512, "5", True, 2)]),
]


def write_cot_folder(root: Path, trajectories: list | None = None) -> Path:
    """Write ``root/trajectories.csv`` and ``root/raw/g/cell/dense_simple32/probes.csv``."""
    rows = [TRAJ_HEADER]
    probes = [PROBE_HEADER]
    for pid, seed, target, tokens, final, ok, ps in trajectories or TRAJECTORIES:
        rows.append(f"{M},ds1,{seed},{pid},{target},{tokens},True,stop,{final},{ok},50")
        for i, (pos, ans, certain, out) in enumerate(ps):
            probes.append(f"{pid},ds1,{M},{seed},{pos},{i + 1},{ans},{certain},{out},"
                          f"{50 + pos},0.1")
    root.mkdir(parents=True, exist_ok=True)
    (root / "trajectories.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cell = root / "raw" / "g" / "cell" / "dense_simple32"
    cell.mkdir(parents=True, exist_ok=True)
    (cell / "probes.csv").write_text("\n".join(probes) + "\n", encoding="utf-8")
    return root
