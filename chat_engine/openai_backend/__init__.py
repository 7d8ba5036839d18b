"""The remote backend: chat through any OpenAI-compatible server (vLLM, SGLang, transformers serve)."""
