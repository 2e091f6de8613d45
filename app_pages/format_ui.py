"""Display helpers shared by the pages: tables a reader can scan (thousands separators, no 'None' cells)."""

import pandas as pd

MISSING = "–"


def readable(df: pd.DataFrame, *, precision: int = 2):
    """A Styler for `st.dataframe`: numbers with thousands separators and `precision` decimals, missing values
    as a dash. The data keep their types, so columns still sort as numbers."""
    return df.style.format(na_rep=MISSING, precision=precision, thousands=",")
