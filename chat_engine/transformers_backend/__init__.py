"""The in-process backend: a model loaded with transformers, generating in a worker thread."""
