"""The small hierarchy of errors that Phase Zoo raises on purpose."""


class ZooError(Exception):
    """Base of every error Phase Zoo raises on purpose (the CLI prints these in one line)."""


class SpecError(ZooError, ValueError):
    """A zoo spec field has a value that is not allowed; the message names field, value, allowed."""


class DataError(ZooError):
    """A data set cannot be built or read (a missing folder or file, a malformed file)."""


class ZooFolderError(ZooError):
    """A zoo folder is missing, inconsistent, tampered with, or belongs to another spec."""


class IntegrityError(ZooFolderError):
    """A shard's bytes do not match the checksum that the manifest records."""


class TrainStateError(ZooError):
    """A saved training state cannot be resumed: unreadable, or saved by another run."""
