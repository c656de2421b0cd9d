"""Models: loading (loader), the embedded tiny VLM (tiny), encoding and the LM helpers."""


class CheckpointError(RuntimeError):
    """A model folder that cannot be loaded, with the reason. Defined here, not in loader, so
    that the CLI can catch it without importing torch and transformers."""
