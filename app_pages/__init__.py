"""Streamlit pages (thin) and the widget helpers they share."""
