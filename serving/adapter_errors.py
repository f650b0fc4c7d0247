"""What resolving, fetching or loading an adapter can fail with; the send path and the
API turn these into answers (`serving/send.py`, `api/inference.py`)."""


class ModelNotFound(LookupError):
    """No such model for this project (another project's model is not found either)."""


class ModelNotServed(LookupError):
    """A model of a base that no replica serves."""


class AdapterLoadError(RuntimeError):
    """The engine refused or failed to load an adapter (details are in the server's log)."""
