"""AppTest over the calculator page: what a user sees for good and bad input (no browser needed)."""

from pathlib import Path

import pytest
from jobhelpers import PATIENCE
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def at(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    app = AppTest.from_file(APP, default_timeout=PATIENCE)
    app.run()
    assert not app.exception
    return app


def metrics(app) -> dict:
    return {m.label: m.value for m in app.metric}


def errors(app) -> list[str]:
    return [e.value for e in app.error]


def test_default_is_llava_7b_1_4_1_budget_matched(at):
    # mixed rounding (default): floor/ceil ranks per module meet the budget; the mean ranks keep 1:4:1
    assert metrics(at)["Mean ranks v:p:l"] == "7.89:31.6:7.89"
    assert metrics(at)["Budget error"] == "+0.01%"
    assert any("dead module" in w.value for w in at.warning)
    assert not errors(at)
    table = at.dataframe[0].value
    assert list(table["rank"]) == [8, 32, 8]
    assert list(table["mean rank"]) == pytest.approx([7.89, 31.6, 7.89], abs=0.02)
    assert table.loc["projector", "budget/model"] > 1  # the disproportion the study is about


def test_ratio_text_and_numbers_stay_in_sync(at):
    at.text_input(key="ratio_text").set_value("2:4:1").run()
    assert [at.number_input(key=k).value for k in ("ratio_v", "ratio_p", "ratio_l")] == [2.0, 4.0, 1.0]
    assert metrics(at)["Mean ranks v:p:l"] == "13.8:27.6:6.91"
    at.number_input(key="ratio_p").set_value(8.0).run()
    assert at.text_input(key="ratio_text").value == "2:8:1"
    assert not errors(at)


@pytest.mark.parametrize(
    ("ratio", "needle"),
    [("1:-1:2", "ratio: the projector weight"), ("a:b:c", "ratio: the vision weight 'a'"),
     ("0:0:0", "ratio: at least one"), ("1:2", "ratio: expected three numbers")],
)
def test_bad_ratio_is_one_line_naming_the_field(at, ratio, needle):
    at.text_input(key="ratio_text").set_value(ratio).run()
    assert not at.exception
    assert len(errors(at)) == 1 and errors(at)[0].startswith(needle) and "\n" not in errors(at)[0]


@pytest.mark.parametrize(
    ("kind", "value", "needle"),
    [("rank", "abc", "budget (rank): 'abc' is not a number"), ("rank", "-5", "budget: the rank budget must be"),
     ("params", "10", "budget: 10 params is below the minimum of 2,935,808"), ("percent", "150", "budget: a percent")],
)
def test_bad_budget(at, kind, value, needle):
    at.radio(key="budget_kind").set_value(kind).run()
    at.text_input(key=f"budget_{kind}").set_value(value).run()
    assert not at.exception
    assert errors(at) and errors(at)[0].startswith(needle)


def test_share_mode_and_other_budget_forms(at):
    at.radio(key="mode").set_value("share").run()
    assert metrics(at)["Mean ranks v:p:l"] != "7.89:31.6:7.89"
    assert any("capped" in w.value for w in at.warning)
    at.radio(key="budget_kind").set_value("percent").run()
    at.text_input(key="budget_percent").set_value("0.5").run()
    assert metrics(at)["Budget"] == f"{0.005 * 7_063_427_072 / 1e6:.2f} M"


def test_audit_and_export_tabs(at):
    audit = at.dataframe[2].value  # component table, canonical grid, audit table
    row = audit[audit["hand-picked"] == "4:16:4"].iloc[0]
    assert -55 < row["budget error %"] < -45 and row["budget-matched ranks"] == "8:32:8"
    assert "LoraConfig(" in at.code[0].value and "rank_pattern" in at.code[0].value
    at.button[0].click().run()
    assert [s.value for s in at.success] == ["PEFT counts 23,488,000 trainable parameters (calculator: 23,488,000)"]
    at.text_input(key="audit").set_value("4:x:4").run()
    assert any(e.startswith("ranks: the projector rank 'x'") for e in errors(at))


def test_model_sources_fail_clearly(at, tmp_path):
    at.radio(key="model_source").set_value("Local folder").run()
    at.text_input(key="local_dir").set_value(str(tmp_path / "nowhere")).run()
    assert errors(at)[0].startswith("model: no config.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    at.text_input(key="local_dir").set_value(str(tmp_path / "bad")).run()
    assert errors(at)[0].startswith("model: ") and "not valid JSON (line 1" in errors(at)[0]
    at.radio(key="model_source").set_value("Hub id").run()
    at.text_input(key="hub_id").set_value("llava-hf/llava-1.5-7b-hf").run()
    assert "unreachable (offline)" in errors(at)[0] and "preset" in errors(at)[0]


@pytest.mark.slow  # renders every bundled preset
def test_every_preset_renders(at):
    options = at.selectbox(key="preset").options
    assert len(options) >= 9
    for name in options:
        at.selectbox(key="preset").set_value(name.split(" — ")[0]).run()
        if name.startswith("gemma-3"):  # its projector cannot get a LoRA: said plainly for the default 1:4:1
            assert not at.exception and "Gemma 3's projector is a weight matrix" in errors(at)[0], name
            continue
        assert not at.exception and not errors(at), name


def test_uniform_rounding_flags_the_budget_error_and_full_finetune_arm(at):
    at.radio(key="rounding").set_value("uniform").run()
    assert metrics(at)["Mean ranks v:p:l"] == "8:32:8"
    assert metrics(at)["Budget error"] == "+1.36%"
    assert any("exceeds the 1% tolerance" in e for e in errors(at))  # visible, not a bare number
    grid = at.dataframe[1].value
    assert grid.set_index("ratio").loc["1:4:1", "budget flag"] == "over ±1%"
    at.radio(key="rounding").set_value("mixed").run()
    at.text_input(key="budget_rank").set_value("16").run()
    at.multiselect(key="full_finetune").set_value(["projector"]).run()
    assert not at.exception and not errors(at)
    assert metrics(at)["Mean ranks v:p:l"].split(":")[1] == "full"
    assert any("fully fine-tuned (modules_to_save)" in w.value for w in at.warning)
