"""Live replay harness against OpenAI-compatible servers (not built yet; see README.md)."""
