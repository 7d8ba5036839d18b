"""The chat engine: generation and the owner of the loaded model. Knows nothing of the web page."""
