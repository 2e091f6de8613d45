"""Publishing adapters: model card, repo-id checks, one-commit push, verification, token hygiene, CLI, page.

Real components throughout: a real tiny LLaVA + PEFT LoRA adapter saved with safetensors, the real
huggingface_hub client over real HTTP to the local Hub-compatible server of tests/helpers/hub_server.py, and
`PeftModel.from_pretrained(base, "ns/name")` resolving through that server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers.jobscript import PATIENCE
from tests.helpers.tiny import build_tiny_model, tiny_config_dict, write_model_dir
from toolkit.errors import InputError
from toolkit.hub.modelcard import HUB_LICENSES, build_card, check_card, render_card, split_card
from toolkit.hub.publish import PublishError, collect_files, dry_run, list_adapters, push, validate_repo_id

EVAL_TAG = "lmms-lab-vqav2__validation__n50"
REPO = "alice/tiny-llava-141"


def cmba_json(allocation: dict, *, base: dict | None = None, name: str = "llava-141") -> dict:
    return {
        "format": "cmba-adapter/1", "kind": "adapter", "name": name, "created": "2025-03-01T12:00:00+00:00",
        "base_model": base or {"id": "/home/someone/models/tiny-llava", "hub_id": None, "revision": None,
                               "model_type": "llava"},
        "allocation": allocation,
        "training": {"seed": 3, "max_steps": 40, "epochs": None, "batch_size": 4, "grad_accum": 2,
                     "learning_rate": 2e-4, "component_lr": {"projector": 1e-3}, "precision": "fp32",
                     "quantize": None, "gradient_checkpointing": False, "checkpoint_every": 20},
        "dataset": {"id": "synthetic:shapes?n=400&seed=0", "revision": None, "split": "train", "size": 400,
                    "limit": None},
        "result": {"steps": 40, "train_time_s": 12.5, "samples_per_s": 12.8, "final_loss": 0.8123,
                   "peak_memory_bytes": None, "no_gradient_modules": []},
        "versions": {"python": "3.11.7", "torch": "2.x", "transformers": "5.x", "peft": "0.x", "cmba": "0.1"},
    }


def results_json(overall: float = 47.25, per_type: dict | None = None) -> dict:
    return {"format": "cmba-eval/1", "adapter": "llava-141", "base_model": "tiny-llava",
            "dataset": {"id": "lmms-lab/VQAv2", "split": "validation", "limit": 50, "n": 50, "revision": "abc123"},
            "settings": {"max_new_tokens": 8, "batch_size": 8, "prompt": "short answer"},
            "scores": {"overall": overall, "per_answer_type": per_type or {"yes/no": 71.0, "number": 18.5, "other": 33.3},
                       "per_question_type": {"what color": 40.0}, "n": 50},
            "eval_time_s": 4.2, "created": "2025-03-01T13:00:00+00:00"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real PEFT LoRA adapter (budget-matched 1:4:1 on the tiny LLaVA) + cmba.json + one evaluation."""
    from peft import get_peft_model

    from toolkit import AllocationSpec, Budget, Ratio, allocate, load_structure

    root = tmp_path_factory.mktemp("built")
    structure = load_structure(str(write_model_dir(root / "tiny-llava", tiny_config_dict("llava"))))
    allocation = allocate(structure, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 4)))
    config = allocation.lora_config()
    config.init_lora_weights = False  # random A and B: a load that drops or zeroes weights cannot pass
    model = get_peft_model(build_tiny_model("llava"), config)
    folder = root / "llava-141"
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "cmba.json").write_text(json.dumps(cmba_json(allocation.to_dict())))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 40, "loss": 0.81}) + "\n")
    ev = folder / "eval" / EVAL_TAG
    ev.mkdir(parents=True)
    (ev / "results.json").write_text(json.dumps(results_json()))
    (ev / "predictions.jsonl").write_text(json.dumps({"question_id": 1, "prediction": "red", "accuracy": 1.0}) + "\n")
    return folder


@pytest.fixture
def adapter(built, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the built adapter inside a tmp adapters dir (tests may change it)."""
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    return Path(shutil.copytree(built, tmp_path / "adapters" / built.name))


def lora_tensors(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


# ---------------------------------------------------------------------------------------------- model card


def test_card_metadata_is_honest_and_round_trips(adapter):
    content = render_card(adapter, repo_id=REPO, license="apache-2.0")
    meta = check_card(content)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["license"] == "apache-2.0"
    assert "base_model" not in meta  # a local folder is not a Hub id: nothing false in base_model
    assert meta["datasets"] == ["lmms-lab/VQAv2"]  # the synthetic training data is not a Hub dataset
    assert {"lora", "cmba", "vision-language", "llava"} <= set(meta["tags"])
    [entry] = meta["model-index"][0]["results"]
    assert entry["dataset"]["split"] == "validation"
    assert "subset of 50 questions" in entry["dataset"]["name"]
    assert "test" not in entry["dataset"]["name"] + entry["dataset"]["split"]
    values = {m["name"]: m["value"] for m in entry["metrics"]}
    assert values["VQA accuracy"] == 47.25 and values["VQA accuracy (number)"] == 18.5
    _, body = split_card(content)
    assert "tiny-llava" in body and "/home/someone" not in body  # the local path is not published in the text
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in body
    rows = {cells[0]: cells for cells in ([x.strip() for x in line.strip("|").split("|")]
                                          for line in body.splitlines() if line.startswith("| "))}
    # the real 1:4:1 allocation: mixed rounding keeps the ratio on the mean ranks the card shows
    assert float(rows["projector"][2]) == pytest.approx(4 * float(rows["vision"][2]), rel=0.05)
    assert "Rounding: mixed" in body


def test_card_allocation_table_matches_cmba_json(adapter):
    alloc = json.loads((adapter / "cmba.json").read_text())["allocation"]
    body = split_card(render_card(adapter))[1]
    for comp in ("vision", "projector", "language"):
        c = alloc["components"][comp]
        row = next(line for line in body.splitlines() if line.startswith(f"| {comp} |"))
        cells = [x.strip() for x in row.strip("|").split("|")]
        assert cells[1:6] == [str(c["rank"]), f"{c['mean_rank']:g}", f"{c['alpha']:g}", str(c["modules"]),
                              f"{c['params']:,}"]
        assert cells[6] == f"{100 * c['share_of_budget']:.1f}%" and cells[7] == f"{100 * c['share_of_model']:.1f}%"


def test_card_without_evaluation_says_not_evaluated(adapter):
    shutil.rmtree(adapter / "eval")
    content = render_card(adapter)
    meta = check_card(content)
    assert "model-index" not in meta and "datasets" not in meta and "license" not in meta
    assert "Not evaluated" in content and "%**" not in content


def test_card_with_hub_base_names_it_and_demo_base_says_so(adapter):
    data = json.loads((adapter / "cmba.json").read_text())
    data["base_model"] = {"id": "llava-1.5-7b", "hub_id": "llava-hf/llava-1.5-7b-hf", "revision": "main",
                          "model_type": "llava"}
    (adapter / "cmba.json").write_text(json.dumps(data))
    card = build_card(adapter, repo_id=REPO)
    assert card.data.base_model == "llava-hf/llava-1.5-7b-hf"
    assert 'from_pretrained("llava-hf/llava-1.5-7b-hf")' in card.text
    data["base_model"] = {"id": "demo", "hub_id": None, "revision": None, "model_type": "llava"}
    (adapter / "cmba.json").write_text(json.dumps(data))
    card = build_card(adapter, repo_id=REPO)
    assert card.data.base_model is None and "offline demo model" in card.text and "not on the Hub" in card.text


@pytest.mark.parametrize("bad", ["apache", "MIT License", "gpl-4.0"])
def test_unknown_license_is_refused(adapter, bad):
    with pytest.raises(InputError, match=r"^license: '"):
        render_card(adapter, license=bad)
    assert "llama3" in HUB_LICENSES and render_card(adapter, license="MIT").count("license: mit") == 1


def test_check_card_rejects_what_the_hub_client_cannot_parse():
    with pytest.raises(ValueError):
        check_card("---\n- a\n- b\n---\n# list metadata\n")
    with pytest.raises(ValueError, match="license"):
        check_card("---\nlicense: not-a-license\n---\n# x\n")


# ---------------------------------------------------------------------------------------------- files, dry run


def test_dry_run_lists_files_with_sizes_and_renders_card(adapter):
    (adapter / "checkpoints" / "checkpoint-20").mkdir(parents=True)
    (adapter / "checkpoints" / "checkpoint-20" / "optimizer.pt").write_bytes(b"\x80\x04pickle")  # never published
    big = adapter / "eval" / "other__validation__n9000"
    big.mkdir()
    full = results_json(30.0)
    full["dataset"] |= {"limit": None, "n": 9000}
    full["scores"]["n"] = 9000
    (big / "results.json").write_text(json.dumps(full))
    with open(big / "predictions.jsonl", "wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)
    plan = dry_run(adapter, repo_id=REPO, license="mit")
    paths = [f.path_in_repo for f in plan.files]
    assert paths == sorted(["README.md", "adapter_config.json", "adapter_model.safetensors", "cmba.json",
                            "metrics.jsonl", f"eval/{EVAL_TAG}/results.json", f"eval/{EVAL_TAG}/predictions.jsonl",
                            "eval/other__validation__n9000/results.json"])
    for f in plan.files:
        if f.path_in_repo != "README.md":
            data = (adapter / f.path_in_repo).read_bytes()
            assert f.size == len(data) and f.sha256 == hashlib.sha256(data).hexdigest()
    skipped = dict(plan.skipped)
    assert skipped["eval/other__validation__n9000/predictions.jsonl"] == "larger than 10 MB"
    assert "checkpoints/" in skipped and "README.md" in skipped  # PEFT's template card is replaced
    readme = next(f for f in plan.files if f.path_in_repo == "README.md")
    assert readme.content.decode() == plan.card and check_card(plan.card)["license"] == "mit"
    [entry] = check_card(plan.card)["model-index"][0]["results"]  # the Hub merges one split's entries: keep the
    assert entry["dataset"]["name"] == "lmms-lab/VQAv2 (validation split, all 9000 questions)"  # largest one
    assert entry["metrics"][0] == {"type": "accuracy", "value": 30.0, "name": "VQA accuracy"}
    assert "subset of 50 questions" in plan.card and "all 9000 questions" in plan.card  # the text lists both


@pytest.mark.parametrize("name", ["adapter_model.bin", "eval/x/state.pt", "weights.pth", "extra.pkl", "old.ckpt"])
def test_pickle_files_are_refused(adapter, name, hub):
    (adapter / name).parent.mkdir(parents=True, exist_ok=True)
    (adapter / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InputError, match=r"^adapter: pickle files found \(" + name.replace(".", r"\.")):
        push(adapter, REPO, token=hub.write_token, endpoint=hub.url)
    assert hub.requests == []


def test_incomplete_or_base_folders_are_refused(adapter, tmp_path):
    (adapter / "cmba.json").unlink()
    with pytest.raises(InputError, match="no cmba.json"):
        collect_files(adapter)
    base = tmp_path / "adapters" / "base--tiny"
    base.mkdir()
    (base / "cmba.json").write_text(json.dumps({"format": "cmba-adapter/1", "kind": "base", "name": "base--tiny"}))
    with pytest.raises(InputError, match="base-model reference"):
        collect_files(base)
    assert list_adapters() == []  # neither is a complete adapter
    with pytest.raises(InputError, match="not a folder"):
        dry_run(tmp_path / "nope")


def test_truncated_safetensors_is_refused(adapter):
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(InputError, match="not a valid safetensors"):
        collect_files(adapter)


# ---------------------------------------------------------------------------------------------- repo ids

BAD_IDS = ["", "tiny", "alice/", "/tiny", "alice/tiny/extra", "alice/ti--ny", "alice/ti..ny", "alice/tiny.git",
           "alice/-tiny", "alice/tiny-", "alice/ti ny", "alice/naïve", "al!ce/tiny", "alice/" + "x" * 97,
           "datasets/alice/tiny"]


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_bad_repo_ids_are_refused_before_any_request(adapter, hub, repo_id):
    with pytest.raises(InputError, match=r"^repo-id: '"):
        push(adapter, repo_id, token=hub.write_token, endpoint=hub.url)
    assert hub.requests == []


@pytest.mark.parametrize("repo_id", ["alice/tiny", "cmba-lab/Foo-BAR_foo.bar123", "a/" + "x" * 96])
def test_good_repo_ids_pass(repo_id):
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize("repo_id", ["alice/x\n", " alice/x", "alice/x ", "alice/\tx", "alice/x\x00"])
def test_repo_ids_with_spaces_or_control_characters_are_refused_not_stripped(repo_id):
    """A pasted newline or space is a mistake to show, not to repair behind the user's back (issue #27)."""
    with pytest.raises(InputError, match=r"^repo-id: .* holds spaces or control characters") as info:
        validate_repo_id(repo_id)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- push


def test_push_round_trip_loads_identical_weights_through_the_hub(adapter, hub):
    from peft import PeftModel
    from safetensors.torch import load_file

    steps = []
    result = push(adapter, REPO, token=hub.write_token, endpoint=hub.url, license="apache-2.0",
                  progress=lambda fraction, message: steps.append(fraction))
    assert result.url == f"{hub.url}/{REPO}" and result.verified and not result.private
    assert steps[-1] == 1.0 and steps == sorted(steps)
    repo = hub.server.repos[("model", REPO)]
    assert len(repo.commits) == 2 and repo.commits[result.commit]["parent"] is not None  # initial + ONE commit
    remote = hub.files(REPO)
    assert set(remote) == {".gitattributes", *result.files}
    local = (adapter / "adapter_model.safetensors").read_bytes()
    assert repo.commits[result.commit]["tree"]["adapter_model.safetensors"].lfs_sha256 == hashlib.sha256(local).hexdigest()
    assert remote["adapter_model.safetensors"] == local
    assert check_card(remote["README.md"].decode())["license"] == "apache-2.0"

    loaded = PeftModel.from_pretrained(build_tiny_model("llava"), REPO)  # resolves through HF_ENDPOINT
    saved = load_file(adapter / "adapter_model.safetensors")
    got = lora_tensors(loaded)
    assert len(got) == len(saved) > 0
    for key, tensor in saved.items():
        match = [v for k, v in got.items() if k.replace(".default", "") == key]
        assert len(match) == 1 and match[0].equal(tensor), key
    assert ("HEAD", f"/{REPO}/resolve/main/adapter_model.safetensors") in hub.requests

    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(REPO))
    assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()} == set(remote)
    assert (snapshot / "cmba.json").read_bytes() == (adapter / "cmba.json").read_bytes()

    again = push(adapter, REPO, token=hub.write_token, endpoint=hub.url, license="apache-2.0")
    assert again.commit == result.commit and len(repo.commits) == 2  # unchanged files: no empty commit


def test_failure_in_the_middle_of_the_upload_leaves_no_commit(adapter, hub):
    hub.fail("lfs-upload", status=400, message="RequestTimeout: socket not read from in time")
    with pytest.raises(PublishError) as err:
        push(adapter, REPO, token=hub.write_token, endpoint=hub.url)
    message = str(err.value)
    assert "adapter_model.safetensors" in message and "RequestTimeout" in message
    assert "nothing was committed: the repo is unchanged" in message and "\n" not in message
    assert set(hub.files(REPO)) == {".gitattributes"}
    assert not any(method == "POST" and "/commit/" in path for method, path in hub.requests)
    assert push(adapter, REPO, token=hub.write_token, endpoint=hub.url).verified  # a retry then succeeds


def test_failure_while_the_hub_applies_the_commit_is_all_or_nothing(adapter, hub):
    first = push(adapter, REPO, token=hub.write_token, endpoint=hub.url)
    before = hub.files(REPO)
    (adapter / "eval" / EVAL_TAG / "results.json").write_text(json.dumps(results_json(52.0)))
    (adapter / "metrics.jsonl").write_text(json.dumps({"step": 80, "loss": 0.5}) + "\n")
    hub.fail("commit", status=500)  # after half of the new commit's entries were applied
    with pytest.raises(PublishError, match=r"500 .*nothing was committed: the repo is unchanged"):
        push(adapter, REPO, token=hub.write_token, endpoint=hub.url)
    assert hub.server.head(REPO) == first.commit and hub.files(REPO) == before


def test_rejected_and_read_only_tokens_get_actionable_messages(adapter, hub):
    bad = "hf_wrongtoken" + "x" * 20
    with pytest.raises(PublishError) as err:
        push(adapter, REPO, token=bad, endpoint=hub.url)
    assert str(err.value).startswith("token rejected (401): set HF_TOKEN to a token with write access")
    assert bad not in str(err.value)

    with pytest.raises(PublishError) as err:
        push(adapter, REPO, token=hub.read_token, endpoint=hub.url)
    message = str(err.value)
    assert "(403)" in message and "'write' role" in message
    assert "Write access to contents/settings of all repos under your personal namespace" in message
    assert hub.read_token not in message and hub.server.repos == {}

    with pytest.raises(PublishError, match=r"no write access to 'bob' \(403\)"):  # alice's write token, someone else's namespace
        push(adapter, "bob/tiny", token=hub.write_token, endpoint=hub.url)


def test_no_token_anywhere_stops_before_any_request(adapter, hub):
    with pytest.raises(InputError, match="^token: none found; set HF_TOKEN"):
        push(adapter, REPO, endpoint=hub.url)
    assert hub.requests == []


@pytest.mark.parametrize("existing_private", [True, False])
def test_visibility_mismatch_is_refused(adapter, hub, existing_private):
    first = push(adapter, REPO, token=hub.write_token, endpoint=hub.url, private=existing_private)
    assert hub.server.repos[("model", REPO)].private is existing_private
    (adapter / "metrics.jsonl").write_text("{}\n")
    have = "private" if existing_private else "public"
    with pytest.raises(PublishError, match=f"already exists as a {have} repo"):
        push(adapter, REPO, token=hub.write_token, endpoint=hub.url, private=not existing_private)
    assert hub.server.head(REPO) == first.commit and hub.server.repos[("model", REPO)].private is existing_private


def test_private_repo_is_invisible_without_its_token(adapter, hub):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    push(adapter, REPO, token=hub.write_token, endpoint=hub.url, private=True)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "cmba.json", token=False)
    path = hf_hub_download(REPO, "cmba.json", token=hub.read_token)
    assert Path(path).read_bytes() == (adapter / "cmba.json").read_bytes()


# ---------------------------------------------------------------------------------------------- token canary


def test_token_never_leaks_into_files_logs_cards_or_errors(adapter, hub, tmp_path, monkeypatch, caplog, capsys):
    import huggingface_hub.constants as constants

    canary = hub.add_token("hf_CANARYtoken" + "7f3a9c1e5b" * 3)
    monkeypatch.setenv("HF_TOKEN", canary)  # the documented way in: the environment
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")  # its own level is WARNING
    messages = []
    ok = push(adapter, REPO, endpoint=hub.url, progress=lambda f, m: messages.append(m))
    assert ok.verified
    (adapter / "metrics.jsonl").write_text("{}\n")
    hub.fail("commit")
    with pytest.raises(PublishError) as failed:
        push(adapter, REPO, endpoint=hub.url, progress=lambda f, m: messages.append(m))
    monkeypatch.setenv("HF_TOKEN", canary + "x")  # an unknown token: its 401 message must not echo it either
    with pytest.raises(PublishError) as rejected:
        push(adapter, REPO, endpoint=hub.url)

    for exc in (failed.value, rejected.value):
        assert canary not in str(exc) and canary not in repr(exc)
        assert exc.__cause__ is None and exc.__suppress_context__  # no chained client error carries it
    assert any(r.name.startswith("huggingface_hub") for r in caplog.records)  # the client's logs were captured
    out, err = capsys.readouterr()
    assert canary not in out + err + caplog.text + "\n".join(messages) + json.dumps(ok.to_dict())
    scanned = 0
    for folder in (tmp_path, hub.server.root, Path(constants.HF_HUB_CACHE)):
        for f in folder.rglob("*"):
            if f.is_file():
                scanned += 1
                assert canary.encode() not in f.read_bytes(), f
    assert scanned > 10  # the adapter, the Hub's stored blobs and objects
    assert all(canary.encode() not in data for data in hub.files(REPO).values())  # card, cmba.json, ...


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch):
    import toolkit.cli

    modules = [m for m in toolkit.cli.COMMAND_MODULES if m != "toolkit.cli.push"]  # whether or not wired yet
    monkeypatch.setattr(toolkit.cli, "COMMAND_MODULES", [*modules, "toolkit.cli.push"])
    return toolkit.cli.main


def test_cli_push_dry_run_json(cli, adapter, capsys):
    assert cli(["push", "--adapter", adapter.name, "--repo-id", REPO, "--dry-run", "--json", "--license", "mit"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] is True and doc["repo_id"] == REPO and doc["license"] == "mit" and doc["private"] is True
    assert {f["path"] for f in doc["files"]} >= {"README.md", "adapter_model.safetensors", "cmba.json"}
    assert doc["total_bytes"] == sum(f["size"] for f in doc["files"])
    assert yaml.safe_load(split_card(doc["card"])[0])["library_name"] == "peft"
    assert cli(["push", "--adapter", adapter.name, "--repo-id", REPO, "--dry-run", "--json", "--public"]) == 0
    assert json.loads(capsys.readouterr().out)["private"] is False  # private unless --public, as in the app


def test_cli_push_for_real_and_bad_input(cli, adapter, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    assert cli(["push", "--adapter", str(adapter), "--repo-id", REPO, "--endpoint", hub.url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] and doc["private"] and doc["changed"] and doc["commit"] == hub.server.head(REPO)
    assert cli(["push", "--adapter", str(adapter), "--repo-id", REPO, "--endpoint", hub.url]) == 0
    captured = capsys.readouterr()  # off a terminal: a line per stage on stderr, the result on stdout
    assert captured.out.startswith(f"nothing new: {hub.url}/{REPO} (private) already holds these files")
    assert captured.err.splitlines()[0] == "[  5%] checking the token"
    assert captured.err.splitlines()[-1].startswith(f"[100%] already up to date: {hub.url}/{REPO} at ")
    hub.reset_requests()
    assert cli(["push", "--adapter", str(adapter), "--repo-id", "alice/x--y", "--endpoint", hub.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: repo-id: 'alice/x--y'") and err.count("\n") == 1 and hub.requests == []
    assert cli(["push", "--adapter", str(adapter), "--repo-id", REPO, "--license", "nope", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: license: 'nope'")


# ---------------------------------------------------------------------------------------------- page


PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "publish.py")


def test_page_previews_the_card_and_pushes_with_a_password_field(adapter, hub):
    from streamlit.proto.TextInput_pb2 import TextInput as TextInputProto
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(PAGE, default_timeout=PATIENCE)
    at.session_state["publish_adapter"] = str(adapter)
    at.run()
    assert not at.exception
    token_box = next(t for t in at.text_input if t.label == "Hugging Face token")
    assert token_box.proto.type == TextInputProto.Type.PASSWORD
    assert any("## Allocation" in m.value for m in at.markdown)
    assert at.button[0].disabled  # no repo id yet

    repo_box = next(t for t in at.text_input if t.label == "Repo id")
    repo_box.set_value("alice/bad--name").run()
    assert [e.value for e in at.error][0].startswith("repo-id: 'alice/bad--name'") and at.button[0].disabled
    repo_box.set_value(REPO).run()
    assert not at.error and at.button[0].disabled  # no token yet (the hub fixture sets none in HF_TOKEN)
    assert any(f'from_pretrained(base, "{REPO}")' in m.value for m in at.markdown)

    token_box.set_value(hub.write_token).run()
    assert not at.button[0].disabled
    at.button[0].click().run()  # the page passes no endpoint: HF_ENDPOINT, set by the hub fixture
    assert not at.exception and not at.error
    assert [s.value for s in at.success][0].startswith(f"Published {hub.url}/{REPO}")
    assert hub.server.repos[("model", REPO)].private  # the page defaults to a private repo
    head = hub.server.head(REPO)
    at.button[0].click().run()  # the same files again: the Hub makes no commit, and the page says so
    assert not at.exception and not at.error and not at.success and hub.server.head(REPO) == head
    assert at.info[0].value.startswith(f"Nothing new to publish: {hub.url}/{REPO} already holds these files")
    assert hub.write_token not in json.dumps(at.session_state.to_dict(), default=str)


def test_page_empty_state(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "none"))
    at = AppTest.from_file(PAGE, default_timeout=PATIENCE).run()
    assert not at.exception and "No complete adapter" in at.info[0].value and not at.text_input


# ---------------------------------------------------------------------------------------------- the local Hub


def test_local_hub_applies_the_hub_storage_rules_to_the_real_client(hub, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url, token=hub.write_token)
    api.create_repo("cmba-lab/rules")  # an organization the token's user belongs to
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)  # zeros: binary and above 10 MiB
    ops = [CommitOperationAdd("notes.txt", b"plain text\n"), CommitOperationAdd("blob.dat", b"\x00\x01binary"),
           CommitOperationAdd("w.safetensors", b"text, but matched by .gitattributes"),
           CommitOperationAdd("big.txt", str(big))]
    api.create_commit("cmba-lab/rules", ops, commit_message="rules")
    lfs = {f.path: f.lfs is not None for f in api.list_repo_tree("cmba-lab/rules", recursive=True)}
    assert lfs == {".gitattributes": False, "notes.txt": False, "blob.dat": True, "w.safetensors": True,
                   "big.txt": True}
    with pytest.raises(Exception, match="409"):
        api.create_repo("cmba-lab/rules")
    assert api.create_repo("cmba-lab/rules", exist_ok=True) == f"{hub.url}/cmba-lab/rules"


# ---------------------------------------------------------------------------------------------- the Publish page


def _base_reference(root: Path, overall: float) -> None:
    """A base-model reference on the adapter's eval set, as `evaluate --base` stores it beside the adapters."""
    base = root / "base--tiny-llava"
    (base / "eval" / EVAL_TAG).mkdir(parents=True)
    (base / "cmba.json").write_text(json.dumps({"format": "cmba-adapter/1", "kind": "base", "name": "base--tiny-llava",
                                                "base_model": {"id": "/home/someone/models/tiny-llava"}}))
    (base / "eval" / EVAL_TAG / "results.json").write_text(json.dumps(results_json(overall)))


def test_an_adapter_below_its_base_model_is_named_before_publishing(adapter):
    from toolkit.hub.studycard import below_base

    assert below_base(adapter) is None  # no base reference: nothing to say
    _base_reference(adapter.parent, 52.5)
    warning = below_base(adapter)
    assert warning and "47.25%" in warning and "52.50%" in warning and EVAL_TAG in warning and "\n" not in warning
    shutil.rmtree(adapter.parent / "base--tiny-llava")
    _base_reference(adapter.parent, 40.0)
    assert below_base(adapter) is None


@pytest.mark.slow
def test_publish_page_warns_next_to_push_and_needs_a_token(adapter, monkeypatch, tmp_path):
    """Issue #27: the regression warning sits by the Push button (not only deep in the card), and Push stays
    disabled until a token is there (the field, HF_TOKEN or a saved login)."""
    from streamlit.testing.v1 import AppTest

    from tests.helpers.jobscript import PATIENCE

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login
    _base_reference(adapter.parent, 52.5)
    page = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app_pages" / "publish.py"),
                             default_timeout=PATIENCE).run()
    assert not page.exception
    page.text_input[0].input(REPO).run()
    assert any("below its base model alone" in w.value for w in page.warning)
    push = next(b for b in page.button if b.label == "Push to the Hub")
    assert push.disabled
    page.text_input[1].input("hf_" + "x" * 30).run()
    assert not next(b for b in page.button if b.label == "Push to the Hub").disabled
