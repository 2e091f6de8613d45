"""CMBA Toolkit app: `streamlit run app.py` (or `make app`).

The frame only: page config, navigation, shared sidebar and session defaults. Pages live in app_pages/
and stay thin: they read widgets, call `toolkit`, and render.
"""

import streamlit as st

from toolkit.calculator.structure import warm_imports

# transformers' lazy modules must be fully imported before a widget change can interrupt a script run:
# a rerun that lands mid-import leaves names such as AutoConfig unimportable for the whole server process.
warm_imports()

# Material icons ship with Streamlit's own font; emoji need a system emoji font, which many servers lack (empty boxes)
st.set_page_config(page_title="CMBA Toolkit", page_icon=":material/calculate:", layout="wide")

st.session_state.setdefault("ratio_text", "1:4:1")

pages = [
    st.Page("app_pages/calculator.py", title="Budget calculator", icon=":material/calculate:", default=True),
    st.Page("app_pages/jobs.py", title="Train & jobs", icon=":material/model_training:"),
    st.Page("app_pages/study.py", title="Study", icon=":material/science:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/bar_chart:"),
    st.Page("app_pages/publish.py", title="Publish", icon=":material/publish:"),
]
page = st.navigation(pages)

with st.sidebar:
    st.markdown("### CMBA Toolkit")
    st.caption(
        "Cross-modal budget allocation: how should a fixed LoRA parameter budget be split between a VLM's "
        "vision encoder, projector and language decoder?"
    )
    st.caption("Calculator → Train & jobs → Study → Compare → Publish")

page.run()
