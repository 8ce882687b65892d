"""Phase Zoo core: zoo specs, architectures, data sets, training, metrics, phases, schema."""

__version__ = "0.1.0"
