"""User-facing error types, shared by export and runtime (torch-free).

Every error a user can cause is raised as a ``ClipxaiError`` whose message is
one line saying what is wrong and what to do. The CLIs print that line and
exit non-zero, without a traceback.
"""


class ClipxaiError(Exception):
    """An error caused by the user's input, with a one-line, actionable message."""

    exit_code = 2  # what a CLI exits with (clipxai/cli/console.py)


class BundleError(ClipxaiError):
    """A bundle that is missing, corrupt, tampered with or of an unknown schema."""


class WeightsError(ClipxaiError):
    """Weights that cannot be found, fetched or loaded."""


class VerificationError(ClipxaiError):
    """The exported graph disagrees with the PyTorch model beyond tolerance."""


class WeightsUnavailableError(WeightsError):
    """Weights that could not be downloaded (no network, hub down). CLI exit status 3."""

    exit_code = 3
