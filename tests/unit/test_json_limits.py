"""Hostile input is refused at the edge, naming its field: too deep, too big, numbers and
values JSON cannot round-trip. Nothing here needs Redis."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetline.producer.cli import app
from fleetline.producer.cli_jobs import read_spec
from fleetline.producer.submit import parse_spec
from fleetline.shared.errors import ConfigError, SpecError
from fleetline.shared.json_limits import MAX_ERRORS, check_text, check_value, problems
from fleetline.shared.schemas import JobSpec
from fleetline.shared.settings import LimitsSettings, load_settings, read_settings

# The CLI tests' spec, and their guard against a local `fleetline up` (autouse).
from tests.unit.test_cli import no_local_redis, valid_spec  # noqa: F401 (autouse fixture)

DEPTH = 64
BYTES = 20_000_000
HUGE = 100_000

runner = CliRunner()


def deep_text(levels: int) -> str:
    """A spec whose input nests `levels` objects under "a", built without recursion."""
    return '{"kind": "research_brief", "input": ' + '{"a": ' * levels + "1" + "}" * levels + "}"


def deep_value(levels: int) -> dict[str, Any]:
    """The same as a dict, built in a loop."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return {"kind": "research_brief", "input": value}


def nested_lists(containers: int) -> Any:
    """`containers` lists, one inside the other, around a 0."""
    value: Any = 0
    for _ in range(containers):
        value = [value]
    return value


def refused(call: Any, *args: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        call(*args)
    return info.value.errors


def fields(errors: list[tuple[str, str]]) -> list[str]:
    return [path for path, _ in errors]


# --- depth --------------------------------------------------------------------------------


def test_text_nested_100000_levels_is_refused_naming_the_path() -> None:
    errors = refused(check_text, deep_text(HUGE), DEPTH, BYTES)

    [(path, reason)] = errors
    assert path.startswith("input.a.a.a") and path.endswith("a.a")
    assert "..." in path and len(path) < 100
    assert f"deeper than {DEPTH} levels" in reason


@pytest.mark.parametrize(
    "text",
    [
        "[" * HUGE + "]" * HUGE,
        "[" * HUGE,  # never closed: still too deep, not a RecursionError
        '{"x": ' * HUGE,
    ],
)
def test_deep_text_of_any_shape_is_a_spec_error(text: str) -> None:
    errors = refused(check_text, text, DEPTH, BYTES)

    assert "deeper than" in errors[0][1]


def test_deep_list_text_names_the_indices() -> None:
    text = '{"input": {"docs": [1, 2, ' + "[" * HUGE + "]" * HUGE + "]}}"

    [(path, _)] = refused(check_text, text, DEPTH, BYTES)

    assert path.startswith("input.docs.2.0.0")


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"input": {"s": "[{" * HUGE, "t": 'a"b\\[[[['}})

    assert check_text(text, DEPTH, BYTES)["input"]["s"] == "[{" * HUGE


def test_dict_nested_100000_levels_is_refused_naming_the_path() -> None:
    [(path, reason)] = refused(check_value, deep_value(HUGE), DEPTH)

    assert path.startswith("input.a.a.a") and "..." in path
    assert f"deeper than {DEPTH} levels" in reason


def test_a_cycle_is_refused_as_too_deep() -> None:
    loop: dict[str, Any] = {}
    loop["again"] = loop

    [(path, reason)] = refused(check_value, {"input": loop}, DEPTH)

    assert path.startswith("input.again.again")
    assert "deeper than" in reason


@pytest.mark.parametrize("depth", [1, 2, DEPTH])
def test_exactly_max_depth_passes_and_one_more_fails(depth: int) -> None:
    at_limit, over = nested_lists(depth), nested_lists(depth + 1)

    assert check_text(json.dumps(at_limit), depth, BYTES) == at_limit
    check_value(at_limit, depth)
    assert "deeper than" in refused(check_text, json.dumps(over), depth, BYTES)[0][1]
    assert "deeper than" in refused(check_value, over, depth)[0][1]


def test_depth_counts_objects_and_lists_alike() -> None:
    # spec > input > documents > a document: four containers.
    spec = valid_spec()

    check_value(spec, 4)
    assert check_text(json.dumps(spec), 4, BYTES) == spec
    assert fields(refused(check_value, spec, 3)) == ["input.documents.0"]
    assert fields(refused(check_text, json.dumps(spec), 3, BYTES)) == ["input.documents.0"]


def test_max_depth_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        check_value({}, 0)


# --- numbers ------------------------------------------------------------------------------


def test_5000_digit_integer_in_text_is_refused_naming_the_field() -> None:
    text = '{"input": {"documents": [{"n": ' + "7" * 5000 + "}]}}"

    [(path, reason)] = refused(check_text, text, DEPTH, BYTES)

    assert path == "input.documents.0.n"
    assert "5000 digits" in reason and "64-bit" in reason


def test_5000_digit_integer_in_dict_is_refused_naming_the_field() -> None:
    [(path, reason)] = refused(check_value, {"input": {"n": 7 * 10**4999}}, DEPTH)

    assert path == "input.n"
    assert "64-bit" in reason


@pytest.mark.parametrize("number", [2**64, 2**63, -(2**63) - 1, -(2**64)])
def test_integers_outside_int64_are_refused(number: int) -> None:
    text = json.dumps({"input": {"n": [0, number]}})

    assert fields(refused(check_text, text, DEPTH, BYTES)) == ["input.n.1"]
    assert fields(refused(check_value, {"input": {"n": [0, number]}}, DEPTH)) == ["input.n.1"]


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63), 0, -1, 10**18])
def test_integers_inside_int64_pass(number: int) -> None:
    value = {"input": {"n": number}}

    assert check_text(json.dumps(value), DEPTH, BYTES) == value
    check_value(value, DEPTH)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_in_text_are_refused(constant: str) -> None:
    text = '{"input": {"scores": [1.5, ' + constant + "]}}"

    [(path, reason)] = refused(check_text, text, DEPTH, BYTES)

    assert path == "input.scores.1"
    assert constant in reason


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1" * 400 + ".0"])
def test_floats_that_overflow_to_infinity_are_refused(literal: str) -> None:
    [(path, reason)] = refused(check_text, '{"input": {"x": ' + literal + "}}", DEPTH, BYTES)

    assert path == "input.x"
    assert "infinity" in reason


def test_small_and_ordinary_floats_pass() -> None:
    value = {"input": {"x": [1e-400, 1.5e300, -0.0, 0.1]}}

    assert check_text(json.dumps(value), DEPTH, BYTES) == {
        "input": {"x": [0.0, 1.5e300, -0.0, 0.1]}
    }


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_in_dict_are_refused(number: float) -> None:
    [(path, reason)] = refused(check_value, {"input": {"documents": [{"score": number}]}}, DEPTH)

    assert path == "input.documents.0.score"
    assert "finite" in reason


# --- types and strings --------------------------------------------------------------------


class Thing:
    pass


@pytest.mark.parametrize(
    ("value", "kind"),
    [({1, 2}, "set"), (b"bytes", "bytes"), (Thing(), "Thing"), ((1, 2), "tuple")],
)
def test_values_json_does_not_have_are_refused_naming_the_field(value: Any, kind: str) -> None:
    [(path, reason)] = refused(check_value, {"input": {"documents": [{"text": value}]}}, DEPTH)

    assert path == "input.documents.0.text"
    assert kind in reason


def test_non_string_keys_are_refused() -> None:
    [(path, reason)] = refused(check_value, {"input": {"meta": {1: "one"}}}, DEPTH)

    assert path == "input.meta.1"
    assert "int" in reason and "not a string" in reason


def test_json_types_and_their_subclasses_pass() -> None:
    class Text(str):
        pass

    value = {"input": {"b": True, "n": None, "i": 3, "f": 1.5, "s": Text("x"), "l": [False]}}

    check_value(value, DEPTH)


def test_lone_surrogates_are_refused_in_values_and_keys() -> None:
    errors = refused(check_value, {"input": {"text": "ok \ud800", "\udc00": 1}}, DEPTH)

    assert fields(errors)[0] == "input.text"
    assert "surrogate" in errors[0][1]
    # The path of a bad key is still printable.
    assert errors[1][0] == "input.\\udc00"
    str(SpecError(errors)).encode("utf-8")


def test_lone_surrogate_escape_in_text_is_refused() -> None:
    [(path, reason)] = refused(check_text, '{"input": {"text": "a\\ud800b"}}', DEPTH, BYTES)

    assert path == "input.text"
    assert "surrogate" in reason


def test_surrogate_pair_escape_is_a_valid_character() -> None:
    assert check_text('{"t": "\\ud83d\\ude00"}', DEPTH, BYTES) == {"t": "\U0001f600"}


def test_every_problem_is_named_up_to_a_cap() -> None:
    value = {"input": {"n": [float("nan")] * 1000, "later": b"x"}}

    errors = refused(check_value, value, DEPTH)

    assert len(errors) == MAX_ERRORS
    assert {"input.later", "input.n.0", "input.n.1"} <= set(fields(errors))


def test_problems_takes_the_path_of_a_part() -> None:
    assert problems({"x": float("inf")}, DEPTH, ("input",)) == [
        ("input.x", "inf is not a JSON number (must be finite)")
    ]
    assert problems({"ok": 1}, DEPTH) == []


def test_a_long_key_is_shortened_in_the_path() -> None:
    [(path, _)] = refused(check_value, {"k" * 10_000: float("nan")}, DEPTH)

    assert path.startswith("kkk") and path.endswith("...") and len(path) < 50


# --- size and the text as a whole ---------------------------------------------------------


def test_text_over_max_bytes_is_refused_before_parsing() -> None:
    text = json.dumps({"s": "é" * 10})  # escaped: ASCII only
    raw = '{"s": "' + "é" * 10 + '"}'  # 2 bytes a character in UTF-8

    assert check_text(text, DEPTH, len(text)) == {"s": "é" * 10}
    assert fields(refused(check_text, text, DEPTH, len(text) - 1)) == ["spec"]
    assert check_text(raw, DEPTH, len(raw) + 10) == {"s": "é" * 10}
    assert "over the limit" in refused(check_text, raw, DEPTH, len(raw) + 9)[0][1]


def test_invalid_json_is_a_spec_error_naming_the_source() -> None:
    [(path, reason)] = refused(check_text, '{"kind": ', DEPTH, BYTES)

    assert path == "spec"
    assert "not valid JSON" in reason


def test_a_valid_spec_passes_unchanged() -> None:
    spec = valid_spec()
    before = copy.deepcopy(spec)

    assert check_text(json.dumps(spec), DEPTH, BYTES) == spec
    check_value(spec, DEPTH)
    assert spec == before


def test_a_10_mb_spec_is_checked() -> None:
    # No timing assertion: this only shows that a spec near the limit goes through.
    spec = valid_spec()
    spec["input"]["documents"] = [
        {"id": f"d{i}", "text": "Acme é grew " * 80, "scores": [1.5, 2, -3]} for i in range(10_000)
    ]
    text = json.dumps(spec)
    assert len(text) > 10_000_000

    assert check_text(text, DEPTH, BYTES) == spec
    check_value(spec, DEPTH)


# --- the setting --------------------------------------------------------------------------


def test_max_json_depth_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LimitsSettings().max_json_depth == 64
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_JSON_DEPTH", "7")
    assert read_settings().limits.max_json_depth == 7
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_JSON_DEPTH", "0")
    with pytest.raises(ConfigError, match="FLEETLINE_LIMITS_MAX_JSON_DEPTH"):
        read_settings()


# --- parse_spec: the Python API's entry ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(input=deep_value(HUGE)["input"]), "input.a.a.a"),
        (lambda s: s["input"]["documents"][0].update(n=10**5000), "input.documents.0.n"),
        (lambda s: s["input"]["documents"][0].update(n=2**64), "input.documents.0.n"),
        (lambda s: s["input"]["documents"][0].update(n=float("nan")), "input.documents.0.n"),
        (lambda s: s["input"]["documents"][0].update(text={1, 2}), "input.documents.0.text"),
        (lambda s: s["input"]["documents"][0].update(text="\ud800"), "input.documents.0.text"),
        (lambda s: s.update(budget_usd=float("inf")), "budget_usd"),
    ],
)
def test_parse_spec_refuses_hostile_dicts_naming_the_field(change: Any, field: str) -> None:
    spec = valid_spec()
    change(spec)

    errors = refused(parse_spec, spec, load_settings())

    assert errors[0][0].startswith(field)


def test_parse_spec_checks_the_input_of_a_jobspec() -> None:
    spec = JobSpec(kind="research_brief", input=deep_value(HUGE)["input"])

    [(path, _)] = refused(parse_spec, spec, load_settings())

    assert path.startswith("input.a.a")


def test_parse_spec_honours_the_depth_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_JSON_DEPTH", "3")

    [(path, _)] = refused(parse_spec, valid_spec(), load_settings())

    assert path == "input.documents.0"


def test_parse_spec_still_accepts_a_valid_spec() -> None:
    spec, plan = parse_spec(valid_spec(), load_settings())

    assert spec.tenant == "t1"
    assert plan.subtasks


# --- the CLI ------------------------------------------------------------------------------


def write_text(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def spec_text(input_json: str) -> str:
    return '{"kind": "research_brief", "tenant": "t1", "input": ' + input_json + "}"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (deep_text(HUGE), "input.a.a.a"),
        (spec_text('{"question": "Why?", "n": ' + "9" * 5000 + "}"), "input.n"),
        (spec_text('{"question": "Why?", "n": [18446744073709551616]}'), "input.n.0"),
        (spec_text('{"question": "Why?", "n": NaN}'), "input.n"),
        (spec_text('{"question": "Why?", "n": -Infinity}'), "input.n"),
        (spec_text('{"question": "Why?", "n": 1e999}'), "input.n"),
        (
            spec_text('{"question": "Why?", "documents": [{"text": "\\udfff"}]}'),
            "input.documents.0.text",
        ),
    ],
)
def test_submit_of_hostile_file_exits_2_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    # No FLEETLINE_REDIS_URL: the refusal comes before anything needs Redis.
    result = runner.invoke(app, ["submit", write_text(tmp_path, text)])

    assert result.exit_code == 2, result.output
    assert "invalid job spec" in result.stderr
    assert field in result.stderr
    assert "FLEETLINE_REDIS_URL" not in result.stderr
    assert "Traceback" not in result.output


def test_submit_of_deep_stdin_exits_2() -> None:
    result = runner.invoke(app, ["submit", "-"], input="[" * HUGE + "]" * HUGE)

    assert result.exit_code == 2, result.output
    assert "deeper than 64 levels" in result.stderr


def test_submit_of_a_file_over_max_input_bytes_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_INPUT_BYTES", "100")
    path = write_text(tmp_path, json.dumps(valid_spec()))

    result = runner.invoke(app, ["submit", path])

    assert result.exit_code == 2, result.output
    assert "over the limit of 100 bytes" in result.stderr


def test_submit_honours_the_depth_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_JSON_DEPTH", "3")

    result = runner.invoke(app, ["submit", write_text(tmp_path, json.dumps(valid_spec()))])

    assert result.exit_code == 2, result.output
    assert "input.documents.0" in result.stderr
    assert "deeper than 3 levels" in result.stderr


def test_read_spec_returns_the_parsed_spec(tmp_path: Path) -> None:
    path = write_text(tmp_path, json.dumps(valid_spec()))

    assert read_spec(path, LimitsSettings()) == valid_spec()
    assert read_spec(path, LimitsSettings(max_json_depth=4)) == valid_spec()
    with pytest.raises(SpecError, match="deeper than 3"):
        read_spec(path, LimitsSettings(max_json_depth=3))
