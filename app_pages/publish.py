"""Publish: push a trained adapter to the Hugging Face Hub (card preview, dry run, one-commit verified push)."""

import os
from pathlib import Path

import pandas as pd
import streamlit as st
from huggingface_hub import get_token

from app_pages.format_ui import readable
from toolkit.errors import CmbaError
from toolkit.hub.modelcard import HUB_LICENSES, split_card
from toolkit.hub.publish import dry_run, folder_stamp, list_adapters, push, validate_repo_id
from toolkit.hub.studycard import below_base
from toolkit.interop.export import DTYPES, default_output, export_notes, latest_export, queue_export
from toolkit.paths import adapters_dir
from toolkit.queue.lifecycle import ensure_worker
from toolkit.queue.states import JobState


@st.cache_data(max_entries=8, show_spinner=False)
def cached_plan(adapter: str, repo_id: str | None, license: str | None, stamp: tuple):
    """The dry run (card + file hashes), recomputed only when the folder's files change."""
    return dry_run(adapter, repo_id=repo_id, license=license)


def export_status(out: str, polling: bool) -> None:
    """The latest export job into `out`: its state, then the lmms-eval command once it has succeeded."""
    job = latest_export(out)
    if job is None:
        return
    if polling and job.state.finished:
        st.rerun()  # the full page again: the fragment stops polling
    export = job.settings["export"]
    what = f"Export job {job.id} ({export['dtype']})"
    if job.state is JobState.QUEUED:
        st.info(f"{what} queued: it starts when the background worker has a free slot")
    elif job.state is JobState.RUNNING:
        st.info(f"{what} running: loading the base model and merging the adapter "
                f"(`python -m toolkit jobs logs {job.id}` shows its log)")
    elif job.state is not JobState.SUCCEEDED:
        st.error(f"{what} {job.state.value}: " + ": ".join(x for x in (job.reason, job.message) if x))
    else:
        try:
            command, warnings = export_notes(export["merged"])
        except CmbaError as exc:
            st.error(str(exc))
            return
        st.success(f"{what} succeeded: the merged model is in {export['merged']}")
        for w in warnings:
            st.warning(w)
        st.code(command or "lmms-eval has no wrapper for this model family (see README.md in the folder)",
                language="bash", wrap_lines=True)


st.title("Publish to the Hub")
options = [str(p) for p in list_adapters()]
chosen = st.session_state.get("publish_adapter")  # set by the Compare page ("publish the best adapter")
if chosen and str(chosen) not in options:
    options.insert(0, str(chosen))
if not options:
    st.info(f"No complete adapter in {adapters_dir()} yet: train one (its cmba.json marks it complete), then "
            "come back to publish it.")
    st.stop()

a, b = st.columns(2)  # the form on top; the card below at the page's full width (its tables are wide)
adapter = a.selectbox("Adapter", options, index=options.index(str(chosen)) if chosen else 0,
                      format_func=lambda p: Path(p).name)
repo_text = b.text_input("Repo id", placeholder="namespace/name, e.g. alice/llava-1-4-1")
repo_id = None
try:
    repo_id = validate_repo_id(repo_text) if repo_text else None
except CmbaError as exc:
    st.error(str(exc))
c, d, e = st.columns([2, 2, 1], vertical_alignment="bottom")
license = c.selectbox("License", ["(not specified)", *HUB_LICENSES])
token = d.text_input("Hugging Face token", type="password",
                     help="Needs write access. Used for this push only, never stored; leave empty to use "
                          "HF_TOKEN or the huggingface_hub login.")
private = e.checkbox("Private repo", value=True, help="An existing repo must have this visibility.")
try:
    plan = cached_plan(adapter, repo_id, None if license.startswith("(") else license, folder_stamp(adapter))
except CmbaError as exc:
    st.error(str(exc))
    st.stop()

warning = below_base(adapter)
if warning:
    st.warning(warning, icon=":material/warning:")
has_token = bool(token or os.environ.get("HF_TOKEN") or get_token())
if not has_token:
    st.caption("Push needs a token with write access: paste it above, set HF_TOKEN, or run `hf auth login`.")
if st.button("Push to the Hub", type="primary", disabled=repo_id is None or not has_token):
    bar = st.progress(0.0, text="starting")
    try:
        result = push(adapter, repo_id, token=token or None, private=private, license=plan.license,
                      progress=lambda fraction, message: bar.progress(fraction, text=message))
    except CmbaError as exc:
        st.error(str(exc))
    else:
        if result.changed:
            st.success(f"Published {result.url} (commit {result.commit[:10]}, verified)")
        else:
            st.info(f"Nothing new to publish: {result.url} already holds these files (commit "
                    f"{result.commit[:10]}, verified)")
        with st.expander("Verification"):
            st.write("\n".join(f"- {line}" for line in result.checks))


with st.expander("Export for lmms-eval / VLMEvalKit"):
    st.caption("Their model wrappers load one model path and no adapter: this merges the adapter into its base "
               "(PEFT's merge_and_unload) and writes a plain transformers folder with the harness commands in its "
               "README.md, as a background job. Bring lmms-eval's samples back with `python -m toolkit import-eval`.")
    f, g = st.columns([3, 1], vertical_alignment="bottom")
    out = f.text_input("Output folder", value=str(default_output(adapter)), key="export_out")
    dtype = g.selectbox("Weights", DTYPES, key="export_dtype")
    overwrite = st.checkbox("Replace the folder if it is not empty", key="export_overwrite")
    if st.button("Export merged model", key="export_button"):
        try:
            queue_export(adapter=adapter, output=out, dtype=dtype, overwrite=overwrite)
            ensure_worker()
        except CmbaError as exc:
            st.error(str(exc))
    try:
        latest = latest_export(out)
    except CmbaError as exc:
        st.error(str(exc))
    else:
        polling = latest is not None and not latest.state.finished
        st.fragment(export_status, run_every=2 if polling else None)(out, polling)

metadata, body = split_card(plan.card)
card_tab, meta_tab, files_tab = st.tabs(["Model card", "Card metadata", f"Files ({len(plan.files)})"])
card_tab.markdown(body)
meta_tab.code(metadata, language="yaml", wrap_lines=True)
files_tab.dataframe(readable(pd.DataFrame([{"file": f.path_in_repo, "bytes": f.size, "sha256": f.sha256[:16]}
                                           for f in plan.files])), hide_index=True, width="stretch")
for path, reason in plan.skipped:
    files_tab.caption(f"not published: {path} ({reason})")
