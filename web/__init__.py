"""What the server adds to Streamlit's own HTTP routes: guards in front of them (the page is app.py's)."""
