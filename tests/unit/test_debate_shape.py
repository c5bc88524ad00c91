"""The debate shape as pure code: its rules, the consensus check, the history the agents
read, the sim debaters, and the edge check of a first round's cost. No Redis, no workers."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from typing import Any

import pytest
from pydantic import BaseModel

from fleetline import Fleet, PlanError, debate, lexical_agree
from fleetline.examples import debate_sim
from fleetline.producer.submit import parse_spec
from fleetline.shared.errors import SpecError
from fleetline.shared.fleet.debate import (
    DebateRules,
    Stop,
    agreement,
    history_text,
    round_step_id,
    turn_text,
)
from fleetline.shared.settings import load_settings


class Answer(BaseModel):
    answer: str


fleet = Fleet("debating")
talker = fleet.agent("talker", tier="cheap", output=Answer, prompt="Answer.")
judge = fleet.agent("arbiter", tier="reasoning", output=Answer, prompt="Judge.")


def _agents(n: int) -> list[Any]:
    return [talker.step(id=f"t{i}", text="Q?") for i in range(n)]


def test_a_debate_is_its_agents_its_judge_and_its_rules() -> None:
    plan = debate(_agents(3), judge.step(id="j"), max_rounds=4, threshold=0.5, quorum=2)
    assert plan.shape == "debate" and plan.then is not None and plan.then.id == "j"
    assert plan.rules == DebateRules(4, 0.5, 2, lexical_agree)
    assert debate(_agents(2), judge.step(id="j")).rules == DebateRules(3, 0.8, 2, lexical_agree)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"agents": 1}, "at least two agents"),
        ({"threshold": 0.0}, "threshold: 0.0 is not in"),
        ({"threshold": 2.5}, "threshold: 2.5 is not in"),
        ({"max_rounds": 0}, "max_rounds: 0"),
        ({"quorum": 4}, "quorum: 4 is not between 1 and 3"),
    ],
)
def test_a_debate_out_of_range_is_refused_naming_the_argument(
    changes: dict[str, Any], reason: str
) -> None:
    args: dict[str, Any] = {"agents": 3, "threshold": 0.8, "max_rounds": 3, "quorum": None}
    args.update(changes)
    with pytest.raises(PlanError, match=reason):
        debate(
            _agents(args.pop("agents")),
            judge.step(id="j"),
            max_rounds=args["max_rounds"],
            threshold=args["threshold"],
            quorum=args["quorum"],
        )


def test_the_lexical_check_folds_case_accents_and_punctuation() -> None:
    assert lexical_agree({"answer": "Paris."}, {"answer": "paris"})
    assert lexical_agree({"answer": "Zürich"}, {"answer": "zurich!"})
    assert not lexical_agree({"answer": "Paris"}, {"answer": "Lyon, not Paris"})
    # Outputs without an `answer` text compare as their JSON.
    assert lexical_agree({"n": 1, "m": 2}, {"m": 2, "n": 1})


def test_agreement_is_the_share_of_the_others_agreeing_with_the_first() -> None:
    answers = [{"answer": a} for a in ("yes", "yes", "no", "Yes.")]
    assert agreement(answers) == pytest.approx(2 / 3, abs=1e-4)
    assert agreement(answers[2:3] + answers[:2]) == 0.0
    assert agreement(answers[:1]) == 0.0 and agreement([]) == 0.0
    # A pluggable check: here, any two answers agree.
    assert agreement(answers, lambda a, b: True) == 1.0


def test_a_debate_stops_at_its_threshold_its_last_round_or_a_round_with_no_answers() -> None:
    rules = DebateRules(max_rounds=3, threshold=0.8, quorum=3)
    assert rules.stop(1, 0.5, 3) is None
    assert rules.stop(1, 0.8, 3) is Stop.CONSENSUS
    assert rules.stop(3, 0.5, 3) is Stop.MAX_ROUNDS
    assert rules.stop(2, 1.0, 0) is Stop.NO_ANSWERS
    # Above 1 it never stops early, but full agreement is still a consensus.
    never = DebateRules(max_rounds=3, threshold=1.5, quorum=3)
    assert never.stop(1, 1.0, 3) is None and never.stop(3, 1.0, 3) is Stop.MAX_ROUNDS
    assert never.consensus(1.0) and not never.consensus(0.9)


def test_each_round_reads_the_question_then_the_rounds_before_it() -> None:
    step = talker.step(id="t1", text="Question: Q?")
    assert turn_text(step, []) == "Question: Q?"
    history = [{"t1": {"answer": "yes"}, "t2": {"answer": "no"}}, {"t1": {"answer": "no"}}]
    assert history_text(history) == (
        "Earlier rounds of the debate:\nRound 1:\n- t1: yes\n- t2: no\nRound 2:\n- t1: no"
    )
    assert turn_text(step, history).startswith("Question: Q?\n\nEarlier rounds")
    assert round_step_id("t1", 2) == "t1:r2"


def _sim_debate(inp: dict[str, Any]) -> tuple[int, Stop, list[dict[str, str]]]:
    """The example debate, run offline on its sim answers and the pure rules."""
    plan = load_settings().fleet.plan("debate", inp)
    assert plan.rules is not None
    history: list[dict[str, dict[str, Any]]] = []
    for number in range(1, plan.rules.max_rounds + 1):
        answers = {
            s.id: debate_sim.debater(s.worker.instruction(s.goal), turn_text(s, history))  # type: ignore[union-attr]
            for s in plan.steps
        }
        history.append(answers)
        stop = plan.rules.stop(number, agreement(list(answers.values())), len(answers))
        if stop is not None:
            return number, stop, [{k: v["answer"] for k, v in h.items()} for h in history]
    raise AssertionError("a debate always stops by its last round")


EVIDENCE = [
    {
        "id": "a",
        "text": "Nordwind Energy leads offshore wind. Helio Grid makes batteries. Nordwind "
        "Energy has farms in the North Sea. Helio Grid is growing fast. Baltic Cable Company "
        "lays cables. Helio Grid won a contract.",
    }
]


def test_the_sim_debaters_disagree_converge_and_repeat_themselves() -> None:
    questions = [
        "Which company leads offshore wind?",
        "Who will win the grid contract?",
        "Which firm matters most?",
        "Who is growing fastest?",
        "Which company should the fund back?",
        "Who lays the cables?",
    ]
    runs = {}
    with redirect_stdout(io.StringIO()):
        for q in questions:
            for n in (3, 5):
                inp = {"question": q, "documents": EVIDENCE, "agents": n, "max_rounds": 4}
                runs[(q, n)] = _sim_debate(inp)
    ends = {(rounds, stop) for rounds, stop, _ in runs.values()}
    assert (1, Stop.CONSENSUS) in ends, "some agree at once"
    assert any(r > 1 and s is Stop.CONSENSUS for r, s in ends), "some converge later"
    assert (4, Stop.MAX_ROUNDS) in ends, "some never agree"
    assert any(len(set(h[0].values())) > 1 for _, _, h in runs.values()), "they disagree"
    # Seeded by the calls' own text: the same debate runs the same way every time.
    same = {"question": questions[0], "documents": EVIDENCE, "agents": 3, "max_rounds": 4}
    assert _sim_debate(same) == runs[(questions[0], 3)]


def test_a_threshold_above_one_runs_every_round_of_the_example() -> None:
    rounds, stop, _ = _sim_debate(
        {"question": "Who lays the cables?", "documents": EVIDENCE, "threshold": 2, "max_rounds": 5}
    )
    assert (rounds, stop) == (5, Stop.MAX_ROUNDS)


def test_a_debate_whose_first_round_its_budget_cannot_cover_is_refused_at_the_edge() -> None:
    spec = {
        "kind": "debate",
        "budget_usd": 0.0001,
        "input": {"question": "Who leads?", "agents": 7},
    }
    with pytest.raises(SpecError) as info:
        parse_spec(spec, load_settings())
    (field, reason), *_ = info.value.errors
    assert field == "budget_usd" and "a round of this debate and its judge may cost" in reason


def test_the_example_debate_input_is_checked() -> None:
    for bad, where in (({"agents": 8}, "input.agents"), ({"agents": 2, "quorum": 3}, "input")):
        with pytest.raises(SpecError) as info:
            parse_spec({"kind": "debate", "input": {"question": "Who?", **bad}}, load_settings())
        assert info.value.errors[0][0] == where
