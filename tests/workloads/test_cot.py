"""Long chain-of-thought workloads (dynasim/workloads/cot.py): the folder reader, its
data checks and bad-input errors, and the named workloads on the real governor data."""

from __future__ import annotations

import pytest

from dynasim.errors import InputError
from dynasim.workloads.cot import (
    COT_WORKLOADS,
    is_cot_workload,
    load_cot,
    parse_select,
    read_cot_folder,
)
from tests.workloads.cot_fixture import write_cot_folder


def test_folder_reader_joins_probes_and_checks_positions(tmp_path):
    w = read_cot_folder(write_cot_folder(tmp_path / "cot"))
    assert w.probe_interval == 64
    assert [t.problem_id for t in w.trajectories] == ["1", "2", "3"]  # "4" excluded
    assert "1 trajectories excluded" in w.notes and "1 probes past" in w.notes
    t1, t2, t3 = w.trajectories
    assert t1.positions == (64, 128, 192, 256, 320) and t1.tokens == 400
    assert t1.answers[1] == "\\frac{1}{2}" and t1.prompt_tokens == 50
    assert t1.probe_prompt_tokens[0] == 114 and t1.probe_tokens == (5, 6, 4, 4, 4)
    assert t2.answers[1] is None                      # a blank probe answer
    assert t2.hesitant == (False, False, True, False, False, False, False)
    assert t3.positions == (64,)                      # the probe past the end dropped
    assert t1.correct and t3.correct                  # \dfrac{1}{2} = 1/2, C = (C)
    assert is_cot_workload(str(tmp_path / "cot")) and not is_cot_workload("game24-sc")


def test_select_filters_model_and_dataset(tmp_path):
    root = write_cot_folder(tmp_path / "cot")
    assert len(read_cot_folder(root, {"model": "model-a"}).trajectories) == 3
    with pytest.raises(InputError, match="no trajectories selected"):
        read_cot_folder(root, {"dataset": "other"})
    assert parse_select(["model=qwen", "dataset=aime24"]) == {"model": "qwen",
                                                              "dataset": "aime24"}
    with pytest.raises(InputError, match="model=SUBSTRING"):
        parse_select(["seed=1"])


@pytest.mark.parametrize("file, old, new, line, field", [
    ("trajectories.csv", ",400,", ",four hundred,", 2, "tokens_used"),
    ("trajectories.csv", "8,True,50", "8,maybe,50", 3, "final_correct"),
    ("probes.csv", ",192,3,7,False,", ",192,3,7,perhaps,", 9, "is_certain"),
    ("probes.csv", ",192,3,0.5,", ",-192,3,0.5,", 4, "token_position"),
])
def test_bad_values_name_file_line_and_field(tmp_path, file, old, new, line, field):
    root = write_cot_folder(tmp_path / "cot")
    path = root / "trajectories.csv" if file == "trajectories.csv" else \
        root / "raw/g/cell/dense_simple32/probes.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError) as err:
        read_cot_folder(root)
    assert err.value.line == line and err.value.field == field
    assert str(path) in str(err.value)


def test_missing_column_and_missing_folder(tmp_path):
    root = write_cot_folder(tmp_path / "cot")
    p = root / "trajectories.csv"
    p.write_text(p.read_text().replace("tokens_used", "tokens"))
    with pytest.raises(InputError, match="missing column") as err:
        read_cot_folder(root)
    assert err.value.field == "tokens_used" and err.value.line == 1
    with pytest.raises(InputError, match="not a CoT workload name"):
        load_cot(str(tmp_path / "nowhere"))


def test_named_workloads_on_the_real_data(data_dir):
    assert set(COT_WORKLOADS) == {f"cot-{m}-{d}" for m in ("r1-qwen7b", "r1-llama8b",
                                                            "qwen3-8b")
                                  for d in ("aime24", "amc23", "math500")}
    w = load_cot("cot-r1-qwen7b-aime24")
    assert len(w.trajectories) == 90 and not w.notes
    assert len({t.problem_id for t in w.trajectories}) == 30
    assert {t.model for t in w.trajectories} == {"deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
    for t in w.trajectories:
        assert t.positions and all(p % 64 == 0 and p <= t.tokens for p in t.positions)
        assert len(t.positions) == len(t.answers) == len(t.hesitant) == len(t.probe_tokens)
    llama = load_cot("cot-r1-llama8b-aime24")
    assert len(llama.trajectories) == 102 and "6 trajectories excluded" in llama.notes


def test_problems_group_the_samples_of_one_problem(tmp_path):
    rows = [("1", 7, "2", 100, "2", True, [(64, "2", True, 2)]),
            ("1", 3, "2", 120, "3", False, [(64, "3", True, 2)]),
            ("2", 3, "5", 90, "5", True, [(64, "5", True, 2)])]
    w = read_cot_folder(write_cot_folder(tmp_path / "cot", rows))
    p = w.problems()
    assert [t.seed for t in p[("org/Model-A", "ds1", "1")]] == [3, 7]
    assert len(p) == 2 and len(w.groups()[("org/Model-A", "ds1")]) == 3
